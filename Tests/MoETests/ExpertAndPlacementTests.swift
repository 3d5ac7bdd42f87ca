import Foundation
import RandomStreams
import Testing
@testable import MoE

private func randomValues(_ count: Int, seed: UInt64) -> [Float] {
    var random = SeededGenerator(seed: seed)
    return (0..<count).map { _ in random.nextSignedUnitFloat() }
}

/// The FFN with plain loops and Double accumulation: an independent check of the GEMM path.
private func naiveFFN(_ w: ExpertWeights, _ form: FFNForm, _ x: [Float], rows: Int, d: Int) -> [Float] {
    let ff = form.dFF
    var output = [Float](repeating: 0, count: rows * d)
    for row in 0..<rows {
        var hidden = [Double](repeating: 0, count: ff)
        for j in 0..<ff {
            var a = form.hasBias ? Double(w.b1[j]) : 0
            var b = form.hasBias && form.activation.isGated ? Double(w.b3[j]) : 0
            for i in 0..<d {
                a += Double(x[row * d + i]) * Double(w.w1[i * ff + j])
                if form.activation.isGated { b += Double(x[row * d + i]) * Double(w.w3[i * ff + j]) }
            }
            switch form.activation {
            case .relu: hidden[j] = max(0, a)
            case .gelu: hidden[j] = 0.5 * a * (1 + tanh(0.7978845608 * (a + 0.044715 * a * a * a)))
            case .swiglu: hidden[j] = a / (1 + exp(-a)) * b
            case .clampedGLU:
                let limit = Double(form.glu.limit), alpha = Double(form.glu.alpha)
                let g = min(a, limit), u = min(max(b, -limit), limit)
                hidden[j] = (u + 1) * g / (1 + exp(-alpha * g))
            }
        }
        for i in 0..<d {
            var y = form.hasBias ? Double(w.b2[i]) : 0
            for j in 0..<ff { y += hidden[j] * Double(w.w2[j * d + i]) }
            output[row * d + i] = Float(y)
        }
    }
    return output
}

@Suite("Experts and placement")
struct ExpertAndPlacementTests {
    @Test("the GEMM expert equals a plain-loop FFN, every activation with and without biases",
          arguments: Activation.allCases, [false, true])
    func ffnMatchesNaive(activation: Activation, hasBias: Bool) {
        let (d, ff, rows) = (12, 20, 7)
        // Scaled up so the clamped GLU's limit (here 1.5) is crossed by some entries.
        let form = FFNForm(activation: activation, dFF: ff, hasBias: hasBias, glu: ClampedGLU(alpha: 1.702, limit: 1.5))
        let weights = ExpertWeights(w1: randomValues(d * ff, seed: 1).map { $0 * 2 }, b1: hasBias ? randomValues(ff, seed: 2) : [],
                                    w2: randomValues(ff * d, seed: 3), b2: hasBias ? randomValues(d, seed: 4) : [],
                                    w3: activation.isGated ? randomValues(d * ff, seed: 5).map { $0 * 2 } : [],
                                    b3: hasBias && activation.isGated ? randomValues(ff, seed: 7) : [])
        let x = randomValues(rows * d, seed: 6)
        var y = [Float](repeating: .nan, count: rows * d)
        x.withUnsafeBufferPointer { input in
            y.withUnsafeMutableBufferPointer { output in
                OpenBLASKernels().prepare(weights, form: form, dModel: d)
                    .forward(input: input.baseAddress!, rows: rows, output: output.baseAddress!, workspace: ExpertWorkspace())
            }
        }
        let expected = naiveFFN(weights, form, x, rows: rows, d: d)
        for (got, want) in zip(y, expected) { #expect(abs(got - want) <= 1e-5 * max(1, abs(want)), "\(got) vs \(want)") }
    }

    @Test("an expert's wire bytes restore to the same FFN; wrong sizes and non-finite values are refused")
    func kernelsWireRoundTrip() {
        let (d, ff, rows) = (8, 12, 5)
        let form = FFNForm(activation: .gelu, dFF: ff, hasBias: true)
        let weights = ExpertWeights(w1: randomValues(d * ff, seed: 11), b1: randomValues(ff, seed: 12), w2: randomValues(ff * d, seed: 13),
                                    b2: randomValues(d, seed: 14), w3: [])
        let kernels = OpenBLASKernels()
        let ffn = kernels.prepare(weights, form: form, dModel: d)
        let bytes = ffn.wireBytes
        #expect(bytes.count == kernels.wireByteCount(form: form, dModel: d))
        #expect(ffn.bytesHeld == form.parameterCount(dModel: d) * 4)
        let restored = bytes.withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) }
        let x = randomValues(rows * d, seed: 15)
        #expect(restored.map { $0.forward(x, dModel: d, workspace: ExpertWorkspace()) } == ffn.forward(x, dModel: d, workspace: ExpertWorkspace()))
        #expect(bytes.dropLast(4).withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) } == nil)
        var poisoned = bytes
        withUnsafeBytes(of: Float.nan) { nan in for index in 0..<4 { poisoned[8 + index] = nan[index] } }
        #expect(poisoned.withUnsafeBytes { kernels.restore(wireBytes: $0, form: form, dModel: d) } == nil)
    }

    @Test("layer norm: zero mean and unit variance before scale and shift")
    func layerNorm() {
        let norm = LayerNorm(scale: [1, 1, 1, 1], shift: [0, 0, 0, 0])
        let x: [Float] = [1, 2, 3, 4]
        var y = [Float](repeating: 0, count: 4)
        x.withUnsafeBufferPointer { input in y.withUnsafeMutableBufferPointer { norm.apply(input.baseAddress!, rows: 1, into: $0.baseAddress!) } }
        let mean = y.reduce(0, +) / 4
        let variance = y.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 4
        #expect(abs(mean) < 1e-6)
        #expect(abs(variance - 1) < 1e-4)
    }

    @Test("RMS norm: x / √(mean(x²) + ε) · γ, no centring")
    func rmsNorm() {
        let norm = RMSNorm(scale: [1, 2, 1, 0.5], epsilon: 1e-6)
        let x: [Float] = [1, 2, 3, 4]
        var y = [Float](repeating: 0, count: 4)
        x.withUnsafeBufferPointer { input in y.withUnsafeMutableBufferPointer { norm.apply(input.baseAddress!, rows: 1, into: $0.baseAddress!) } }
        let rms = (30.0 / 4 + 1e-6).squareRoot()
        for (index, (value, scale)) in zip(x, [1.0, 2, 1, 0.5]).enumerated() {
            #expect(abs(Double(y[index]) - Double(value) / rms * scale) < 1e-6)
        }
    }

    @Test("a shared expert's gate scales each row by σ(x·w_g)")
    func sharedExpertGate() {
        let (d, ff, rows) = (6, 10, 3)
        let form = FFNForm(activation: .swiglu, dFF: ff, hasBias: false)
        let weights = ExpertWeights(w1: randomValues(d * ff, seed: 1), b1: [], w2: randomValues(ff * d, seed: 2), b2: [],
                                    w3: randomValues(d * ff, seed: 3))
        let gate = randomValues(d, seed: 4)
        let x = randomValues(rows * d, seed: 5)
        var y = [Float](repeating: 0, count: rows * d)
        x.withUnsafeBufferPointer { input in
            y.withUnsafeMutableBufferPointer { output in
                SharedExpert.forward(OpenBLASKernels().prepare(weights, form: form, dModel: d), gate: gate, dModel: d, input: input.baseAddress!, rows: rows,
                                     output: output.baseAddress!, workspace: ExpertWorkspace())
            }
        }
        let plain = naiveFFN(weights, form, x, rows: rows, d: d)
        for row in 0..<rows {
            let dot = (0..<d).reduce(0.0) { $0 + Double(x[row * d + $1]) * Double(gate[$1]) }
            let scale = 1 / (1 + exp(-dot))
            for i in 0..<d { #expect(abs(Double(y[row * d + i]) - scale * Double(plain[row * d + i])) < 1e-5) }
        }
    }

    @Test("contiguous blocks: the first E mod n ranks hold one more expert", arguments: [(8, 4), (12, 8), (5, 3), (7, 7), (9, 1)])
    func blocks(experts: Int, ranks: Int) throws {
        let blocks = ExpertBlocks(experts: experts, ranks: ranks)
        var next = 0
        for rank in 0..<ranks {
            let held = blocks.experts(of: rank)
            #expect(held.lowerBound == next)
            #expect(held.count == experts / ranks + (rank < experts % ranks ? 1 : 0))
            for expert in held { #expect(blocks.owner(of: expert) == rank) }
            next = held.upperBound
        }
        #expect(next == experts)
    }

    @Test("E ≥ G: one group, the whole world")
    func oneGroup() {
        let placement = ExpertPlacement(experts: 10, worldSize: 4)
        #expect(placement.groupCount == 1 && placement.groupSize == 4)
        #expect((0..<4).map(placement.heldExperts(ofRank:)) == [0..<3, 3..<6, 6..<8, 8..<10])
        #expect(server(placement, of: 7, forSource: 0) == 2)
    }

    @Test("E < G, E divides G: G/E expert-parallel groups of E consecutive ranks, one expert per rank")
    func replicaGroups() {
        let placement = ExpertPlacement(experts: 2, worldSize: 8)
        #expect(placement.groupCount == 4 && placement.groupSize == 2)
        #expect((0..<8).map(placement.heldExperts(ofRank:)) == [0..<1, 1..<2, 0..<1, 1..<2, 0..<1, 1..<2, 0..<1, 1..<2])
        #expect((0..<8).map(placement.group(ofRank:)) == [0, 0, 1, 1, 2, 2, 3, 3])
        #expect((0..<8).map(placement.rankInGroup) == [0, 1, 0, 1, 0, 1, 0, 1])
        // A token of rank 5 (group 2) for expert 0 goes to rank 4, the replica in its group.
        #expect(server(placement, of: 0, forSource: 5) == 4)
        #expect(server(placement, of: 1, forSource: 5) == 5)
    }

    @Test("E < G, E does not divide G: a smaller last group holds every expert in blocks")
    func unevenGroups() {
        let placement = ExpertPlacement(experts: 3, worldSize: 8)
        #expect(placement.groupCount == 3 && placement.groupSize == 3)
        #expect((0..<placement.groupCount).map(placement.ranks(ofGroup:)) == [0..<3, 3..<6, 6..<8])
        #expect((0..<8).map(placement.heldExperts(ofRank:)) == [0..<1, 1..<2, 2..<3, 0..<1, 1..<2, 2..<3, 0..<2, 2..<3])
        #expect(server(placement, of: 1, forSource: 7) == 6)
        #expect(server(placement, of: 2, forSource: 6) == 7)
        // Every group holds every expert exactly once.
        for group in 0..<placement.groupCount {
            let held = placement.ranks(ofGroup: group).flatMap { Array(placement.heldExperts(ofRank: $0)) }
            #expect(held == [0, 1, 2])
        }
    }

    @Test("seeded weights depend only on seed and tensor name")
    func seededWeights() {
        let a = ModelWeights.seededTensor(name: "layers.0.experts.3.w1", shape: [4, 8], seed: 9)
        #expect(a == ModelWeights.seededTensor(name: "layers.0.experts.3.w1", shape: [4, 8], seed: 9))
        #expect(a != ModelWeights.seededTensor(name: "layers.0.experts.4.w1", shape: [4, 8], seed: 9))
        #expect(a.allSatisfy { abs($0) <= (3.0 / 4).squareRoot() })
    }

    @Test("token partition: contiguous blocks covering every token once", arguments: [(10, 3), (0, 4), (7, 7), (5, 8)])
    func partition(total: Int, ranks: Int) {
        let ranges = (0..<ranks).map { TokenPartition.range(rank: $0, ranks: ranks, total: total) }
        #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == total)
        for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.upperBound == b.lowerBound) }
        #expect(ranges.allSatisfy { $0.count == total / ranks || $0.count == total / ranks + 1 })
    }
}

/// The world rank that serves `expert` for tokens of world rank `source`: the holder of the
/// expert in the source's own group.
func server(_ placement: ExpertPlacement, of expert: Int, forSource source: Int) -> Int {
    let group = placement.group(ofRank: source)
    return placement.ranks(ofGroup: group).lowerBound + placement.blocks(ofGroup: group).owner(of: expert)
}
