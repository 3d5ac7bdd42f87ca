import ArgumentParsing
import FileFormats
import JobControl
import MessagePassing
import Foundation
import Plotting

/// `moe stats`: renders a stats log (`moe run --stats`) as tables and SVG plots. No MPI.
struct StatsCommand: JobCommand {
    static let spec = CommandSpec(
        name: "stats",
        summary: "Render a stats log from 'moe run --stats' as tables and SVG plots (no MPI).",
        discussion: """
            Prints, per layer, the steps, routes, drop rate (over all steps and the worst step), load
            imbalance (max/mean routes per expert; mean and worst) and dispatch bytes, then the drop
            rate of every layer per step, and per rank the rows its experts received and its seconds
            in the experts phase (mean per step; max/mean is the compute imbalance between ranks).
            With --svg PREFIX it writes PREFIX-drop.svg (drop rate per layer over steps),
            PREFIX-load-layerL.svg (routes per expert over steps, one line per expert) for every
            layer, and PREFIX-ranks.svg and PREFIX-rank-time.svg (rows and expert seconds per rank
            over steps, with a marker after every step whose placement changed). A log of a run with
            --placement balanced also lists its placement changes.
            """,
        options: [Options.svg.spec, Options.every.spec],
        positional: "FILE")

    enum Options {
        static let svg = TypedOption<String?>.string("svg", "PREFIX", "write the plots as PREFIX-drop.svg and PREFIX-load-layerL.svg")
        static let every = TypedOption<Int>.integer("every", default: 1, in: 1...1_000_000, "print every N-th step in the per-step table")
    }

    let path: String
    let svgPrefix: String?
    let every: Int

    init(options: ParsedOptions) throws(UsageError) {
        path = try options.singlePositional("stats log file (moe stats FILE)")
        svgPrefix = try options.value(Options.svg)
        every = try options.value(Options.every)
    }

    typealias Step = StatsLog.Step

    /// Parses the log (`StatsLog`); the torn last line of a cut log is left out with a note.
    static func load(_ path: String) throws -> (policy: String, steps: [Step]) {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: 1 << 30) } catch { throw InputError(description: "\(path): cannot be read: \(error.reason)") }
        let log = try StatsLog.parse(bytes, path: path)
        if let line = log.incompleteLine {
            writeStandardError("moe stats: note: \(path): line \(line) is incomplete (cut while being written); reading the \(log.steps.count) complete lines before it\n")
        }
        return (log.policy, log.steps)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [Options.svg.naming(svgPrefix.map { $0 + "-drop.svg" })], inputs: [("stats log", path)])
        let (policy, steps): (String, [Step])
        do { (policy, steps) = try Self.load(path) } catch { throw JobFailure(message: "\(error)", reportingRank: 0) }
        let layers = steps[0].routed.count
        print("\(path): \(steps.count) steps, \(layers) layers, policy \(policy)")
        print("layer  steps  routes     drop rate  worst step  imbalance  worst  dispatch MiB")
        for layer in 0..<layers {
            let routes = steps.reduce(0) { $0 + $1.routed[layer].reduce(0, +) }
            let dropped = steps.reduce(0) { $0 + $1.dropped[layer] }
            let worstDrop = steps.map { $0.dropRate[layer] }.max() ?? 0
            let imbalances = steps.map { $0.imbalance[layer] }
            print(String(format: "%5d  %5d  %9d  %8.2f%%  %9.2f%%  %9.2f  %5.2f  %12.2f", layer, steps.count, routes,
                         routes == 0 ? 0.0 : 100 * Double(dropped) / Double(routes), 100 * worstDrop,
                         imbalances.reduce(0, +) / Double(imbalances.count), imbalances.max() ?? 0,
                         steps.reduce(0.0) { $0 + Double($1.bytes[layer]) } / 1_048_576))
        }
        Self.printRanks(steps)
        let changes = steps.filter { !$0.placementChangedLayers.isEmpty }
        if !changes.isEmpty {
            print("placement changes: \(changes.count), \(String(format: "%.2f", Double(changes.reduce(0) { $0 + $1.migrationBytes }) / 1_048_576)) MiB of experts moved; after step "
                  + changes.map { "\($0.step + 1) (layers \($0.placementChangedLayers.map(String.init).joined(separator: ",")))" }.joined(separator: ", "))
        }
        print("step  " + (0..<layers).map { "drop L\($0)".padding(toLength: 9, withPad: " ", startingAt: 0) }.joined(separator: " "))
        for step in steps where step.step % every == 0 || step.step == steps.last!.step {
            print(String(format: "%4d  ", step.step + 1) + step.dropRate.map { String(format: "%7.2f%% ", 100 * $0) }.joined(separator: " "))
        }
        guard let svgPrefix else { return }
        do { try Self.writePlots(steps, policy: policy, layers: layers, changes: changes, prefix: svgPrefix) } catch {
 throw JobFailure(message: "\(error)", reportingRank: 0) }
        print("wrote \(svgPrefix)-drop.svg, \(svgPrefix)-load-layer{0..\(layers - 1)}.svg, \(svgPrefix)-ranks.svg and \(svgPrefix)-rank-time.svg")
    }

    /// Rows and expert seconds per rank (logs that have them), with the max/mean imbalance.
    static func printRanks(_ steps: [Step]) {
        let perRankRows = steps.filter { !$0.rowsByRank.isEmpty }.map { step in
            step.rowsByRank.dropFirst().reduce(step.rowsByRank[0]) { zip($0, $1).map(+) }
        }
        let perRankSeconds = steps.map(\.expertSecondsByRank).filter { !$0.isEmpty }
        if let ranks = perRankRows.first?.count, ranks > 0 {
            let meanRows = (0..<ranks).map { rank in Double(perRankRows.reduce(0) { $0 + $1[rank] }) / Double(perRankRows.count) }
            let meanSeconds = (0..<ranks).map { rank in perRankSeconds.isEmpty ? 0 : perRankSeconds.reduce(0) { $0 + $1[rank] } / Double(perRankSeconds.count) }
            func imbalance(_ values: [Double]) -> Double {
                let mean = values.reduce(0, +) / Double(values.count)
                return mean > 0 ? values.max()! / mean : 1
            }
            print("rank  rows per step (all layers)  share of mean  expert s per step")
            let rowMean = meanRows.reduce(0, +) / Double(ranks)
            for rank in 0..<ranks {
                print(String(format: "%4d  %26.1f  %13.2f  %17.4f", rank, meanRows[rank], rowMean > 0 ? meanRows[rank] / rowMean : 0, meanSeconds[rank]))
            }
            print(String(format: "ranks: max/mean rows %.2f, max/mean expert time %.2f", imbalance(meanRows), imbalance(meanSeconds)))
        }
    }

    /// The drop-rate, per-expert load and per-rank plots, each written whole or not at all.
    static func writePlots(_ steps: [Step], policy: String, layers: Int, changes: [Step], prefix: String) throws {
        var drop = SVGPlot(title: "drop rate per layer over steps (\(policy))", xLabel: "step", yLabel: "dropped routes (%)")
        drop.logX = false
        drop.logY = false
        for layer in 0..<layers {
        drop.series.append(.init(name: "layer \(layer)", points: steps.map { (Double($0.step + 1), 100 * $0.dropRate[layer]) },
                                 color: SVGPlot.palette[layer % SVGPlot.palette.count]))
        }
        try AtomicFileWriter.write(drop.render(bytesOnX: false), to: "\(prefix)-drop.svg")
        for layer in 0..<layers {
            var load = SVGPlot(title: "layer \(layer): routes per expert over steps (\(policy))", xLabel: "step", yLabel: "routes")
            load.logX = false
            load.logY = false
            for expert in steps[0].routed[layer].indices {
                load.series.append(.init(name: "expert \(expert)", points: steps.map { (Double($0.step + 1), Double($0.routed[layer][expert])) },
                                         color: SVGPlot.palette[expert % SVGPlot.palette.count], dashed: expert >= SVGPlot.palette.count))
            }
            try AtomicFileWriter.write(load.render(bytesOnX: false), to: "\(prefix)-load-layer\(layer).svg")
        }
        let withRanks = steps.filter { !$0.rowsByRank.isEmpty }
        if let ranks = withRanks.first?.rowsByRank.first?.count {
            var rows = SVGPlot(title: "rows received per rank over steps, all layers (\(policy))", xLabel: "step", yLabel: "rows")
            var time = SVGPlot(title: "seconds in the experts phase per rank over steps (\(policy))", xLabel: "step", yLabel: "seconds")
            for plot in [\SVGPlot.logX, \SVGPlot.logY] { rows[keyPath: plot] = false; time[keyPath: plot] = false }
            // A placement change after step s takes effect at step s + 1.
            let marks = changes.map { (x: Double($0.step + 1) + 0.5, label: "placement") }
            rows.markers = marks
            time.markers = marks
            for rank in 0..<ranks {
                let color = SVGPlot.palette[rank % SVGPlot.palette.count], dashed = rank >= SVGPlot.palette.count
                rows.series.append(.init(name: "rank \(rank)", points: withRanks.map { step in
                    (Double(step.step + 1), Double(step.rowsByRank.reduce(0) { $0 + $1[rank] }))
                }, color: color, dashed: dashed))
                time.series.append(.init(name: "rank \(rank)", points: withRanks.filter { $0.expertSecondsByRank.count == ranks }.map { step in
                    (Double(step.step + 1), step.expertSecondsByRank[rank])
                }, color: color, dashed: dashed))
            }
            try AtomicFileWriter.write(rows.render(bytesOnX: false), to: "\(prefix)-ranks.svg")
            try AtomicFileWriter.write(time.render(bytesOnX: false), to: "\(prefix)-rank-time.svg")
        }
    }
}
