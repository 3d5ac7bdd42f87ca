import Foundation

/// A line chart written as SVG by hand (no outside packages): log-log or linear axes, one
/// polyline per series, dashed series for models, a legend. Enough for latency-vs-size plots.
package struct SVGPlot: Sendable {
    package struct Series: Sendable {
        package var name: String
        package var points: [(x: Double, y: Double)]
        package var color: String
        package var dashed: Bool

        package init(name: String, points: [(x: Double, y: Double)], color: String, dashed: Bool = false) {
            self.name = name
            self.points = points
            self.color = color
            self.dashed = dashed
        }
    }

    package var title: String
    package var xLabel: String
    package var yLabel: String
    package var series: [Series] = []
    package var logX = true
    package var logY = true
    /// Optional vertical marker lines (x, label).
    package var markers: [(x: Double, label: String)] = []

    package static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]

    private let width = 820.0, height = 520.0
    private let left = 80.0, right = 190.0, top = 40.0, bottom = 60.0

    package init(title: String, xLabel: String, yLabel: String) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Axis ticks: powers of ten (log) or 5 even steps (linear) spanning [low, high].
    private static func ticks(_ low: Double, _ high: Double, log: Bool) -> [Double] {
        if log {
            let first = Int(floor(log10(low))), last = Int(ceil(log10(high)))
            return (first...max(first, last)).map { pow(10, Double($0)) }
        }
        return (0...5).map { low + (high - low) * Double($0) / 5 }
    }

    private static func label(_ value: Double, bytes: Bool) -> String {
        if bytes {
            if value >= 1_048_576 { return "\(Int(value) >> 20) MiB" }
            if value >= 1024 { return "\(Int(value) >> 10) KiB" }
            return "\(Int(value)) B"
        }
        if value == 0 { return "0" }
        if value >= 1e6 || value < 1e-2 { return String(format: "%.0e", value) }
        return value >= 1 ? String(format: "%g", value) : String(format: "%.2g", value)
    }

    /// The SVG document. `bytesOnX` labels x ticks as sizes (powers of 4 from 1 B).
    package func render(bytesOnX: Bool = true) -> String {
        let all = series.flatMap(\.points).filter { (!logX || $0.x > 0) && (!logY || $0.y > 0) }
        guard !all.isEmpty else { return "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n" }
        var xLow = all.map(\.x).min()!, xHigh = all.map(\.x).max()!
        var yLow = all.map(\.y).min()!, yHigh = all.map(\.y).max()!
        if logY { yLow = pow(10, floor(log10(yLow))); yHigh = pow(10, ceil(log10(yHigh))) }
        if xLow == xHigh { xHigh = xLow * 2 }
        if yLow == yHigh { yHigh = yLow * 2 }
        if !logY { yLow = min(0, yLow) }
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ x: Double) -> Double {
            let t = logX ? (log10(x) - log10(xLow)) / (log10(xHigh) - log10(xLow)) : (x - xLow) / (xHigh - xLow)
            return left + t * plotWidth
        }
        func py(_ y: Double) -> Double {
            let t = logY ? (log10(y) - log10(yLow)) / (log10(yHigh) - log10(yLow)) : (y - yLow) / (yHigh - yLow)
            return top + (1 - t) * plotHeight
        }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="22" font-size="15" font-weight="bold">\(Self.escape(title))</text>
        <rect x="\(left)" y="\(top)" width="\(plotWidth)" height="\(plotHeight)" fill="none" stroke="#444"/>

        """
        // x ticks: powers of 4 for sizes, else powers of ten.
        var xTicks: [Double] = []
        if bytesOnX && logX {
            var tick = 1.0
            while tick <= xHigh { if tick >= xLow { xTicks.append(tick) }; tick *= 4 }
        } else {
            xTicks = Self.ticks(xLow, xHigh, log: logX).filter { $0 >= xLow && $0 <= xHigh }
        }
        for tick in xTicks {
            let x = px(tick)
            svg += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + plotHeight)\" stroke=\"#ddd\"/>\n"
            svg += "<text x=\"\(x)\" y=\"\(top + plotHeight + 16)\" text-anchor=\"middle\">\(Self.escape(Self.label(tick, bytes: bytesOnX)))</text>\n"
        }
        for tick in Self.ticks(yLow, yHigh, log: logY) where tick >= yLow && tick <= yHigh {
            let y = py(tick)
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + plotWidth)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
            svg += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(Self.escape(Self.label(tick, bytes: false)))</text>\n"
        }
        svg += "<text x=\"\(left + plotWidth / 2)\" y=\"\(height - 18)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        svg += "<text x=\"18\" y=\"\(top + plotHeight / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 18 \(top + plotHeight / 2))\">\(Self.escape(yLabel))</text>\n"
        for (index, marker) in markers.enumerated() where marker.x >= xLow && marker.x <= xHigh {
            let x = px(marker.x)
            svg += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(top + plotHeight)\" stroke=\"#888\" stroke-dasharray=\"2,3\"/>\n"
            svg += "<text x=\"\(x - 4)\" y=\"\(top + 14 + Double(index) * 14)\" text-anchor=\"end\" fill=\"#555\">\(Self.escape(marker.label))</text>\n"
        }
        for (index, line) in series.enumerated() {
            let points = line.points.filter { (!logX || $0.x > 0) && (!logY || $0.y > 0) }
            guard !points.isEmpty else { continue }
            let path = points.map { "\(px($0.x)),\(py($0.y))" }.joined(separator: " ")
            let dash = line.dashed ? " stroke-dasharray=\"6,4\"" : ""
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\"\(dash)/>\n"
            if !line.dashed {
                for point in points { svg += "<circle cx=\"\(px(point.x))\" cy=\"\(py(point.y))\" r=\"2.5\" fill=\"\(line.color)\"/>\n" }
            }
            let legendY = top + 10 + Double(index) * 20
            let legendX = left + plotWidth + 14
            svg += "<line x1=\"\(legendX)\" y1=\"\(legendY)\" x2=\"\(legendX + 26)\" y2=\"\(legendY)\" stroke=\"\(line.color)\" stroke-width=\"2\"\(dash)/>\n"
            svg += "<text x=\"\(legendX + 32)\" y=\"\(legendY + 4)\">\(Self.escape(line.name))</text>\n"
        }
        return svg + "</svg>\n"
    }
}
