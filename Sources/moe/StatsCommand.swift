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
            rate of every layer per step. With --svg PREFIX it writes PREFIX-drop.svg (drop rate per
            layer over steps) and PREFIX-load-layerL.svg (routes per expert over steps, one line per
            expert) for every layer.
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
        guard let path = options.positional.first, options.positional.count == 1 else {
            throw .conflict(command: "stats", detail: "give exactly one stats log file (moe stats FILE), got \(options.positional.count)")
        }
        self.path = path
        svgPrefix = try options.value(Options.svg)
        every = try options.value(Options.every)
    }

    struct Step {
        var step: Int
        var routed: [[Int]]      // [layer][expert]
        var dropRate: [Double]
        var imbalance: [Double]
        var bytes: [Int]
        var dropped: [Int]
    }

    /// Parses the log; errors name the line.
    static func load(_ path: String) throws -> (policy: String, steps: [Step]) {
        let bytes: [UInt8]
        do { bytes = try BoundedFileReader.read(path, limit: 1 << 30) } catch { throw InputError(description: "\(path): cannot be read: \(error.reason)") }
        var steps: [Step] = []
        var policy = ""
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let torn = bytes.last != UInt8(ascii: "\n") && !bytes.isEmpty
        for (index, line) in lines.enumerated() where !line.isEmpty {
            func count(_ value: JSONValue, _ path: String) throws -> Int {
                let number = try JSONObjectReader.integer(value, path: path)
                guard number >= 0 else { throw JSONFieldError(path: path, problem: "must be ≥ 0, got \(number)") }
                return number
            }
            func count(_ reader: JSONObjectReader, _ key: String, _ path: String) throws -> Int {
                let number = try reader.integer(key)
                guard number >= 0 else { throw JSONFieldError(path: path, problem: "must be ≥ 0, got \(number)") }
                return number
            }
            do {
                let root = try JSONObjectReader(try JSONParser.parse(Array(line)))
                policy = try root.string("policy")
                var step = Step(step: try count(root, "step", "step"), routed: [], dropRate: [], imbalance: [], bytes: [], dropped: [])
                for (layerPath, value) in try root.array("layers") {
                    let layer = try JSONObjectReader(value, path: layerPath)
                    step.routed.append(try layer.array("routed").map { try count($0.value, $0.path) })
                    var dropped = 0
                    for (path, value) in try layer.array("dropped") { dropped += try count(value, path) }
                    step.dropped.append(dropped)
                    let dropRate = try layer.number("drop_rate")
                    guard (0...1).contains(dropRate) else { throw JSONFieldError(path: "\(layerPath).drop_rate", problem: "must be in 0...1, got \(dropRate)") }
                    step.dropRate.append(dropRate)
                    let imbalance = try layer.number("imbalance")
                    guard imbalance >= 0 else { throw JSONFieldError(path: "\(layerPath).imbalance", problem: "must be ≥ 0, got \(imbalance)") }
                    step.imbalance.append(imbalance)
                    step.bytes.append(try count(layer, "dispatch_bytes", "\(layerPath).dispatch_bytes"))
                }
                if let first = steps.first, first.routed.count != step.routed.count {
                    throw InputError(description: "has \(step.routed.count) layers, line 1 has \(first.routed.count)")
                }
                steps.append(step)
            } catch let error as JSONSyntaxError {
                // The last line of a log cut while being written (a killed run, a full disk) is
                // not an error in the lines before it.
                if torn && index == lines.count - 1 {
                    writeStandardError("moe stats: note: \(path): line \(index + 1) is incomplete (cut while being written); reading the \(steps.count) complete lines before it\n")
                    break
                }
                throw InputError(description: "\(path): line \(index + 1), column \(error.column): \(error.problem)")
            } catch {
                throw InputError(description: "\(path): line \(index + 1): \(error)")
            }
        }
        guard !steps.isEmpty else { throw InputError(description: "\(path): no steps (an empty stats log)") }
        return (policy, steps)
    }

    func run(_ context: JobContext) throws {
        try context.checkPaths(outputs: [("svg", svgPrefix.map { $0 + "-drop.svg" })], inputs: [("stats log", path)])
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
                         routes == 0 ? 0 : 100 * Double(dropped) / Double(routes), 100 * worstDrop,
                         imbalances.reduce(0, +) / Double(imbalances.count), imbalances.max() ?? 0,
                         Double(steps.reduce(0) { $0 + $1.bytes[layer] }) / 1_048_576))
        }
        print("step  " + (0..<layers).map { "drop L\($0)".padding(toLength: 9, withPad: " ", startingAt: 0) }.joined(separator: " "))
        for step in steps where step.step % every == 0 || step.step == steps.last!.step {
            print(String(format: "%4d  ", step.step + 1) + step.dropRate.map { String(format: "%7.2f%% ", 100 * $0) }.joined(separator: " "))
        }
        guard let svgPrefix else { return }
        var drop = SVGPlot(title: "drop rate per layer over steps (\(policy))", xLabel: "step", yLabel: "dropped routes (%)")
        drop.logX = false
        drop.logY = false
        for layer in 0..<layers {
            drop.series.append(.init(name: "layer \(layer)", points: steps.map { (Double($0.step + 1), 100 * $0.dropRate[layer]) },
                                     color: SVGPlot.palette[layer % SVGPlot.palette.count]))
        }
        do {
            try AtomicFileWriter.write(drop.render(bytesOnX: false), to: "\(svgPrefix)-drop.svg")
            for layer in 0..<layers {
                var load = SVGPlot(title: "layer \(layer): routes per expert over steps (\(policy))", xLabel: "step", yLabel: "routes")
                load.logX = false
                load.logY = false
                for expert in steps[0].routed[layer].indices {
                    load.series.append(.init(name: "expert \(expert)", points: steps.map { (Double($0.step + 1), Double($0.routed[layer][expert])) },
                                             color: SVGPlot.palette[expert % SVGPlot.palette.count], dashed: expert >= SVGPlot.palette.count))
                }
                try AtomicFileWriter.write(load.render(bytesOnX: false), to: "\(svgPrefix)-load-layer\(layer).svg")
            }
        } catch { throw JobFailure(message: "\(error)", reportingRank: 0) }
        print("wrote \(svgPrefix)-drop.svg and \(svgPrefix)-load-layer{0..\(layers - 1)}.svg")
    }
}
