import Testing
@testable import CheckpointImport

@Suite("Dequantisation of FP8 and MXFP4 checkpoints")
struct DequantizationTests {
    @Test("FP8 E4M3: normal, subnormal, largest, negative and NaN codes")
    func e4m3() {
        #expect(Dequantization.e4m3(0x38) == 1)          // 0 0111 000: 2^0
        #expect(Dequantization.e4m3(0xB8) == -1)
        #expect(Dequantization.e4m3(0x7E) == 448)        // 0 1111 110: 1.75 · 2^8, the largest finite value
        #expect(Dequantization.e4m3(0x01) == 0x1p-9)     // subnormal: 1/8 · 2^-6
        #expect(Dequantization.e4m3(0x3C) == 1.5)
        #expect(Dequantization.e4m3(0x7F).isNaN)
        #expect(Dequantization.e4m3(0x00) == 0)
    }

    @Test("FP8 blocks: each value is scaled by its block's scale_inv, partial blocks at the edges")
    func fp8Blocks() {
        // 3 × 3 weight, 2 × 2 blocks → scales [2, 2]; every code is 1.0.
        let values = Dequantization.fp8([UInt8](repeating: 0x38, count: 9), scales: [1, 2, 3, 4], rows: 3, columns: 3, blockRows: 2, blockColumns: 2)
        #expect(values == [1, 1, 2, 1, 1, 2, 3, 3, 4])
    }

    @Test("MXFP4: low nibble first, E8M0 scale 2^(s−127), output transposed per expert")
    func mxfp4() {
        // One expert, two rows, one group of 32: row 0 codes 1, 2, …; row 1 all −6 (code 15), scale 2^1.
        var blocks = [UInt8](repeating: 0, count: 2 * 16)
        for index in 0..<16 { blocks[index] = UInt8((2 * index) % 16) | UInt8((2 * index + 1) % 16) << 4 }
        for index in 16..<32 { blocks[index] = 0xFF }
        let values = Dequantization.mxfp4(blocks: blocks, scales: [127, 128], experts: 1, rows: 2, groups: 1)
        // values[column * rows + row]
        for column in 0..<32 {
            #expect(values[column * 2] == Dequantization.fp4Values[column % 16])
            #expect(values[column * 2 + 1] == -12)
        }
    }
}
