import Foundation

/// Image tokenizer: each `patchSize x patchSize` RGB patch becomes the index of its nearest
/// codebook vector (k-means centroid), and decodes back to that centroid. A 32x32 canvas with
/// 4x4 patches gives 8x8 = 64 codes in row-major patch order.
public struct VQCodebook: Equatable, Sendable {
    public let patchSize: Int
    public let codeCount: Int
    /// `codeCount x dimension` values in [0, 1], row-major; dimension = patchSize^2 * 3.
    public let vectors: [Float]

    public var dimension: Int { patchSize * patchSize * 3 }

    public init(patchSize: Int, codeCount: Int, vectors: [Float]) {
        precondition(vectors.count == codeCount * patchSize * patchSize * 3, "VQCodebook: wrong vector count")
        self.patchSize = patchSize; self.codeCount = codeCount; self.vectors = vectors
    }

    /// Codes per image side for a square canvas.
    public func gridSide(canvasSize: Int) -> Int { canvasSize / patchSize }

    /// Patch `(patchX, patchY)` of `image` as floats in [0, 1], written into `into`.
    func patch(of image: RGBImage, patchX: Int, patchY: Int, into values: UnsafeMutablePointer<Float>) {
        var k = 0
        for row in 0..<patchSize {
            let start = 3 * ((patchY * patchSize + row) * image.width + patchX * patchSize)
            for i in 0..<(3 * patchSize) { values[k] = Float(image.pixels[start + i]) / 255; k += 1 }
        }
    }

    /// Reference nearest-code search: full squared distance to every code.
    func nearestCodeReference(_ values: UnsafePointer<Float>) -> Int {
        var best = 0, bestDistance = Float.infinity
        for code in 0..<codeCount {
            var distance: Float = 0
            for d in 0..<dimension { let diff = vectors[code * dimension + d] - values[d]; distance += diff * diff }
            if distance < bestDistance { bestDistance = distance; best = code }
        }
        return best
    }

    public func decode(codes: [Int32]) -> RGBImage {
        let side = Int(Double(codes.count).squareRoot())
        precondition(side * side == codes.count, "decode: \(codes.count) codes do not form a square grid")
        let canvas = side * patchSize
        var pixels = [UInt8](repeating: 0, count: canvas * canvas * 3)
        for (index, code) in codes.enumerated() {
            precondition(code >= 0 && Int(code) < codeCount, "decode: code \(code) outside the codebook")
            let patchX = index % side, patchY = index / side
            var k = Int(code) * dimension
            for row in 0..<patchSize {
                let start = 3 * ((patchY * patchSize + row) * canvas + patchX * patchSize)
                for i in 0..<(3 * patchSize) {
                    pixels[start + i] = UInt8(max(0, min(255, (vectors[k] * 255).rounded())))
                    k += 1
                }
            }
        }
        return RGBImage(width: canvas, height: canvas, pixels: pixels)
    }
}

/// Fast nearest-code search: `argmin |c|^2 - 2 c.x` with the code norms computed once; the
/// codebook is read through one unsafe pointer and nothing is allocated per patch.
struct NearestCodeSearch {
    let codebook: VQCodebook
    let norms: [Float]

    init(_ codebook: VQCodebook) {
        self.codebook = codebook
        let dimension = codebook.dimension
        norms = (0..<codebook.codeCount).map { code in
            var sum: Float = 0
            for d in 0..<dimension { let v = codebook.vectors[code * dimension + d]; sum += v * v }
            return sum
        }
    }

    func nearest(_ values: UnsafePointer<Float>) -> Int {
        let dimension = codebook.dimension
        return codebook.vectors.withUnsafeBufferPointer { codes in
            norms.withUnsafeBufferPointer { norms in
                var best = 0, bestScore = Float.infinity
                for code in 0..<codebook.codeCount {
                    let row = codes.baseAddress! + code * dimension
                    var dot: Float = 0
                    for d in 0..<dimension { dot += row[d] * values[d] }
                    let score = norms[code] - 2 * dot
                    if score < bestScore { bestScore = score; best = code }
                }
                return best
            }
        }
    }
}

/// Encodes images, remembering the code of every distinct patch: rendered worlds repeat a small
/// set of patches, so most lookups skip the search.
public final class VQEncoder {
    public let codebook: VQCodebook
    private let search: NearestCodeSearch
    private var cache: [[UInt8]: Int32] = [:]

    public init(codebook: VQCodebook) {
        self.codebook = codebook
        search = NearestCodeSearch(codebook)
    }

    /// Codes (0..<codeCount) of a square image whose side is a multiple of the patch size.
    public func encode(_ image: RGBImage) -> [Int32] {
        let patchSize = codebook.patchSize
        precondition(image.width == image.height && image.width % patchSize == 0, "encode: \(image.width)x\(image.height) image")
        let side = image.width / patchSize
        var codes = [Int32](repeating: 0, count: side * side)
        var key = [UInt8](repeating: 0, count: codebook.dimension)
        var values = [Float](repeating: 0, count: codebook.dimension)
        for patchY in 0..<side {
            for patchX in 0..<side {
                var k = 0
                for row in 0..<patchSize {
                    let start = 3 * ((patchY * patchSize + row) * image.width + patchX * patchSize)
                    for i in 0..<(3 * patchSize) { key[k] = image.pixels[start + i]; k += 1 }
                }
                if let code = cache[key] { codes[patchY * side + patchX] = code; continue }
                for d in 0..<key.count { values[d] = Float(key[d]) / 255 }
                let code = Int32(values.withUnsafeBufferPointer { search.nearest($0.baseAddress!) })
                cache[key] = code
                codes[patchY * side + patchX] = code
            }
        }
        return codes
    }
}

/// Options of the k-means fit.
public struct KMeansSettings: Sendable {
    /// Upper bound on the codebook size: the fit uses `1 + colours * masks` codes, with as many
    /// masks as fit below the bound and no more than the distinct masks seen (no dead codes).
    public var maximumCodes: Int
    public var patchSize: Int
    public var iterations: Int
    /// At most this many distinct patch masks take part (the most frequent ones).
    public var maximumPatches: Int

    public init(maximumCodes: Int, patchSize: Int, iterations: Int, maximumPatches: Int) {
        self.maximumCodes = maximumCodes; self.patchSize = patchSize
        self.iterations = iterations; self.maximumPatches = maximumPatches
    }

    /// Most mask centroids the bound allows (including the full mask).
    public var maximumMasks: Int { (maximumCodes - 1) / ObjectColor.allCases.count }
}

/// Learns the codebook by k-means over the shapes of the patches of `images`.
///
/// The world's patches are never mixtures of two object colours (objects keep a patch-size gap),
/// so a patch is a mask (which pixels belong to the object) times one palette colour. k-means in
/// RGB would blend red, orange and pink edges into wrong colours; instead k-means runs over the
/// masks (weighted by how often each occurs, starting from the most frequent) and the codebook is
/// the background plus every mask centroid drawn in every palette colour:
///
///     code 0                  background
///     code 1 + m * C + c      mask centroid m (m = 0 is the full patch) in colour c
///
/// Encoding is the ordinary nearest-vector search in RGB, so the codebook is a plain VQ codebook.
public func learnCodebook(
    images: [RGBImage], settings: KMeansSettings,
    progress: (String) -> Void = { _ in }
) -> VQCodebook {
    let patchSize = settings.patchSize
    let pixels = patchSize * patchSize
    precondition(pixels <= 64, "learnCodebook: masks are 64-bit, so patches hold at most 64 pixels")
    precondition(settings.maximumMasks >= 2, "learnCodebook: the codebook needs at least \(1 + 2 * ObjectColor.allCases.count) codes")
    let fullMask: UInt64 = pixels == 64 ? ~0 : (1 << UInt64(pixels)) - 1
    let background = [backgroundRGB.r, backgroundRGB.g, backgroundRGB.b]

    // Count each partial mask (a pixel is "in" when it differs from the background).
    var counts: [UInt64: Int] = [:]
    for image in images {
        let side = image.width / patchSize
        for patchY in 0..<side {
            for patchX in 0..<side {
                var mask: UInt64 = 0
                for row in 0..<patchSize {
                    for column in 0..<patchSize {
                        let offset = 3 * ((patchY * patchSize + row) * image.width + patchX * patchSize + column)
                        if image.pixels[offset] != background[0] || image.pixels[offset + 1] != background[1] || image.pixels[offset + 2] != background[2] {
                            mask |= 1 << UInt64(row * patchSize + column)
                        }
                    }
                }
                if mask != 0 && mask != fullMask { counts[mask, default: 0] += 1 }
            }
        }
    }
    // Most frequent first; ties by mask value so the order never depends on hashing.
    let distinct = counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(settings.maximumPatches)
    let free = max(1, min(settings.maximumMasks - 1, distinct.count))
    let maskCount = free + 1, codeCount = 1 + maskCount * ObjectColor.allCases.count
    progress(
        "k-means: \(counts.count) distinct partial patch masks (\(distinct.count) used); \(free) mask centroids + the full patch, x \(ObjectColor.allCases.count) colours, + background = \(codeCount) codes"
    )

    let points = distinct.flatMap { entry in (0..<pixels).map { Float((entry.key >> UInt64($0)) & 1) } }
    let weights = distinct.map { Float($0.value) }
    let pointCount = distinct.count
    var centroids = [Float](repeating: 0, count: free * pixels)
    for slot in 0..<free where pointCount > 0 {
        let point = slot % pointCount
        for d in 0..<pixels { centroids[slot * pixels + d] = points[point * pixels + d] }
    }
    var distanceToCentroid = [Float](repeating: 0, count: pointCount)
    for iteration in 0..<settings.iterations where pointCount > 0 {
        var sums = [Float](repeating: 0, count: centroids.count)
        var mass = [Float](repeating: 0, count: free)
        var totalError: Double = 0, totalWeight: Double = 0
        for p in 0..<pointCount {
            var best = 0, bestDistance = Float.infinity
            for code in 0..<free {
                var distance: Float = 0
                for d in 0..<pixels { let diff = centroids[code * pixels + d] - points[p * pixels + d]; distance += diff * diff }
                if distance < bestDistance { bestDistance = distance; best = code }
            }
            mass[best] += weights[p]
            for d in 0..<pixels { sums[best * pixels + d] += weights[p] * points[p * pixels + d] }
            distanceToCentroid[p] = bestDistance
            totalError += Double(bestDistance * weights[p]); totalWeight += Double(weights[p])
        }
        // Empty centroids restart at the worst-fit masks, worst first.
        var worst = Array(0..<pointCount).sorted { (distanceToCentroid[$0], $1) > (distanceToCentroid[$1], $0) }.makeIterator()
        for code in 0..<free {
            if mass[code] > 0 {
                for d in 0..<pixels { centroids[code * pixels + d] = sums[code * pixels + d] / mass[code] }
            } else if let point = worst.next() {
                for d in 0..<pixels { centroids[code * pixels + d] = points[point * pixels + d] }
            }
        }
        progress(
            "k-means iteration \(iteration + 1)/\(settings.iterations): mean wrong pixels per partial patch \(String(format: "%.4f", totalError / max(totalWeight, 1)))"
        )
    }

    let masks = [Float](repeating: 1, count: pixels) + centroids
    var vectors = [Float]()
    vectors.reserveCapacity(codeCount * pixels * 3)
    for _ in 0..<pixels { vectors += background.map { Float($0) / 255 } }
    for m in 0..<maskCount {
        for color in ObjectColor.allCases {
            let rgb = [color.rgb.r, color.rgb.g, color.rgb.b]
            for d in 0..<pixels {
                let weight = masks[m * pixels + d]
                for c in 0..<3 { vectors.append((Float(background[c]) + weight * (Float(rgb[c]) - Float(background[c]))) / 255) }
            }
        }
    }
    return VQCodebook(patchSize: patchSize, codeCount: codeCount, vectors: vectors)
}

// MARK: - Codebook file

/// `codebook.bin`: magic `SUDERVQC`, u32 version (1), u32 code count, u32 patch size,
/// u32 channels (3), then code count x patch^2 x 3 little-endian f32 in [0, 1].
let codebookMagic = Array("SUDERVQC".utf8)
let codebookVersion: UInt32 = 1

public func writeCodebook(_ codebook: VQCodebook, to url: URL) throws {
    var bytes = codebookMagic
    appendUInt32(&bytes, codebookVersion)
    appendUInt32(&bytes, UInt32(codebook.codeCount))
    appendUInt32(&bytes, UInt32(codebook.patchSize))
    appendUInt32(&bytes, 3)
    bytes.reserveCapacity(bytes.count + 4 * codebook.vectors.count)
    for value in codebook.vectors { appendUInt32(&bytes, value.bitPattern) }
    try Data(bytes).write(to: url, options: .atomic)
}

public func readCodebook(from url: URL) throws -> VQCodebook {
    let path = url.path
    let data = try readWholeFile(url)
    func fail(_ reason: String) -> WorldError { .malformedFile(path: path, reason: reason) }
    let headerSize = 8 + 4 * 4
    guard data.count >= headerSize else { throw fail("\(data.count) bytes, shorter than the \(headerSize)-byte header") }
    guard Array(data.prefix(8)) == codebookMagic else { throw fail("wrong magic (not a codebook)") }
    let version = readUInt32(data, at: 8), codeCount = Int(readUInt32(data, at: 12))
    let patchSize = Int(readUInt32(data, at: 16)), channels = Int(readUInt32(data, at: 20))
    guard version == codebookVersion else { throw fail("version \(version), expected \(codebookVersion)") }
    guard channels == 3 else { throw fail("\(channels) channels, expected 3") }
    guard (1...64).contains(patchSize) else { throw fail("patch size \(patchSize) outside 1...64") }
    guard (1...1 << 20).contains(codeCount) else { throw fail("code count \(codeCount) outside 1...\(1 << 20)") }
    let valueCount = codeCount * patchSize * patchSize * 3
    guard data.count == headerSize + 4 * valueCount else {
        throw fail("\(data.count) bytes, expected \(headerSize + 4 * valueCount) for \(codeCount) codes of \(patchSize)x\(patchSize)")
    }
    var vectors = [Float](repeating: 0, count: valueCount)
    for i in 0..<valueCount {
        let value = Float(bitPattern: readUInt32(data, at: headerSize + 4 * i))
        guard value.isFinite && value >= 0 && value <= 1 else { throw fail("value \(value) at index \(i) outside [0, 1]") }
        vectors[i] = value
    }
    return VQCodebook(patchSize: patchSize, codeCount: codeCount, vectors: vectors)
}
