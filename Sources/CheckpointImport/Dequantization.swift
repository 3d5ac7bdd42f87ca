/// Dequantisation of the two quantised checkpoint formats the importer reads, to float32.
///
/// - **FP8, block-scaled** (DeepSeek-V3; transformers' `FineGrainedFP8`, `quant_method: fp8`):
///   a linear weight `[out, in]` is stored as `F8_E4M3` with `weight_scale_inv` `F32`
///   `[⌈out/b_r⌉, ⌈in/b_c⌉]` (b = `weight_block_size`, 128×128 in DeepSeek-V3); the weight is
///   `fp8(w[i, j]) · scale_inv[i / b_r, j / b_c]`, one float32 multiply.
/// - **MXFP4** (GPT-OSS, OCP Microscaling: 32-element blocks of FP4 E2M1 values sharing one
///   E8M0 power-of-two scale): `*_blocks` `U8 [..., rows, G, 16]` (two values a byte, low nibble
///   first) and `*_scales` `U8 [..., rows, G]`; value = fp4 · 2^(scale − 127). transformers'
///   GPT-OSS layout is the transpose per expert of the dequantised `[rows, G·32]`.
enum Dequantization {
    /// OCP FP8 E4M3 ("fn": no infinities; S.1111.111 is NaN) → float32, exactly.
    static func e4m3(_ byte: UInt8) -> Float {
        let sign: Float = byte & 0x80 != 0 ? -1 : 1
        let exponent = Int((byte >> 3) & 0x0F)
        let mantissa = Float(byte & 0x07)
        if exponent == 0x0F && byte & 0x07 == 0x07 { return .nan }
        if exponent == 0 { return sign * mantissa / 8 * 0x1p-6 }
        return sign * (1 + mantissa / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }

    /// The 16 FP4 E2M1 values by code (bit 3 is the sign).
    static let fp4Values: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0, -0.5, -1, -1.5, -2, -3, -4, -6]

    /// `[rows, columns]` FP8 weight bytes with `[⌈rows/blockRows⌉, ⌈columns/blockColumns⌉]` scales → float32.
    static func fp8(_ bytes: [UInt8], scales: [Float], rows: Int, columns: Int, blockRows: Int, blockColumns: Int) -> [Float] {
        let scaleColumns = (columns + blockColumns - 1) / blockColumns
        var values = [Float](repeating: 0, count: rows * columns)
        for row in 0..<rows {
            for column in 0..<columns {
                values[row * columns + column] = e4m3(bytes[row * columns + column]) * scales[(row / blockRows) * scaleColumns + column / blockColumns]
            }
        }
        return values
    }

    /// MXFP4 `blocks [experts, rows, groups, 16]` and `scales [experts, rows, groups]` → float32
    /// `[experts, groups·32, rows]` (transposed per expert, as transformers lays GPT-OSS out).
    static func mxfp4(blocks: [UInt8], scales: [UInt8], experts: Int, rows: Int, groups: Int) -> [Float] {
        let columns = groups * 32
        var values = [Float](repeating: 0, count: experts * rows * columns)
        for expert in 0..<experts {
            for row in 0..<rows {
                for group in 0..<groups {
                    let scaleIndex = (expert * rows + row) * groups + group
                    let scale = Float(sign: .plus, exponent: Int(scales[scaleIndex]) - 127, significand: 1)
                    for byteIndex in 0..<16 {
                        let byte = blocks[scaleIndex * 16 + byteIndex]
                        for (half, code) in [(0, byte & 0x0F), (1, byte >> 4)] {
                            let column = group * 32 + 2 * byteIndex + half
                            values[(expert * columns + column) * rows + row] = fp4Values[Int(code)] * scale
                        }
                    }
                }
            }
        }
        return values
    }
}
