import CZlib
import Foundation

/// PNG encoding and decoding for 8-bit images: RGB out; RGB, RGBA, grey and grey+alpha in
/// (alpha dropped), non-interlaced, all five row filters. Enough to read GenEval sample folders.

let pngSignature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]
/// Larger images are refused before inflating: the world is 32x32, sample grids a few hundred
/// pixels a side; 4M pixels bounds the inflated buffer at 16 MB.
let pngMaximumPixels = 1 << 22

public func encodePNG(_ image: RGBImage) -> [UInt8] {
    var raw = [UInt8]()
    raw.reserveCapacity(image.height * (1 + 3 * image.width))
    for row in 0..<image.height {
        raw.append(0)  // filter: none
        raw += image.pixels[(3 * row * image.width)..<(3 * (row + 1) * image.width)]
    }
    let compressed = zlibCompress(raw)

    var header = [UInt8]()
    appendBigEndian(&header, UInt32(image.width)); appendBigEndian(&header, UInt32(image.height))
    header += [8, 2, 0, 0, 0]  // depth 8, colour type RGB, deflate, adaptive filters, no interlace
    var png = pngSignature
    appendChunk(&png, "IHDR", header)
    appendChunk(&png, "IDAT", compressed)
    appendChunk(&png, "IEND", [])
    return png
}

public func writePNG(_ image: RGBImage, to url: URL) throws {
    // Plain writes: Foundation's Data.write syncs every file to disk, which made writing
    // thousands of sample PNGs take half a minute. Samples are reproducible; no sync needed.
    guard let file = fopen(url.path, "wb") else {
        throw WorldError.malformedFile(path: url.path, reason: "cannot create: \(String(cString: strerror(errno)))")
    }
    let bytes = encodePNG(image)
    let written = fwrite(bytes, 1, bytes.count, file)
    let closed = fclose(file)
    guard written == bytes.count, closed == 0 else {
        throw WorldError.malformedFile(path: url.path, reason: "write failed: \(String(cString: strerror(errno)))")
    }
}

public func readPNG(_ url: URL) throws -> RGBImage {
    let data = try readWholeFile(url)
    do { return try decodePNG([UInt8](data)) } catch let error as WorldError {
        if case .png(let reason) = error { throw WorldError.png("\(url.path): \(reason)") }
        throw error
    }
}

public func decodePNG(_ bytes: [UInt8]) throws -> RGBImage {
    guard bytes.count >= 8, Array(bytes[0..<8]) == pngSignature else { throw WorldError.png("not a PNG (bad signature)") }
    var position = 8
    var width = 0, height = 0, colorType = -1
    var idat: [UInt8] = []
    var sawEnd = false
    while position < bytes.count {
        guard bytes.count - position >= 12 else { throw WorldError.png("truncated chunk header at byte \(position)") }
        let length = Int(readBigEndian(bytes, position))
        let typeBytes = Array(bytes[(position + 4)..<(position + 8)])
        let type = String(decoding: typeBytes, as: UTF8.self)
        guard length <= bytes.count - position - 12 else { throw WorldError.png("chunk \(type) of \(length) bytes runs past the end") }
        let body = Array(bytes[(position + 8)..<(position + 8 + length)])
        let storedCRC = readBigEndian(bytes, position + 8 + length)
        let computed = crc32Of(typeBytes + body)
        guard storedCRC == computed else { throw WorldError.png("CRC mismatch in chunk \(type)") }
        position += 12 + length
        switch type {
        case "IHDR":
            guard length == 13 else { throw WorldError.png("IHDR of \(length) bytes") }
            width = Int(readBigEndian(body, 0)); height = Int(readBigEndian(body, 4))
            guard width > 0, height > 0, width <= pngMaximumPixels / height else {
                throw WorldError.png("size \(width)x\(height) outside 1...\(pngMaximumPixels) pixels")
            }
            guard body[8] == 8 else { throw WorldError.png("bit depth \(body[8]); only 8 is supported") }
            colorType = Int(body[9])
            guard [0, 2, 4, 6].contains(colorType) else { throw WorldError.png("colour type \(colorType) (palette images are not supported)") }
            guard body[10] == 0, body[11] == 0 else { throw WorldError.png("unknown compression or filter method") }
            guard body[12] == 0 else { throw WorldError.png("interlaced images are not supported") }
        case "IDAT":
            guard colorType >= 0 else { throw WorldError.png("IDAT before IHDR") }
            idat += body
        case "IEND":
            sawEnd = true
        default:
            break  // ancillary chunks (gAMA, pHYs, text) do not change the pixels we read
        }
        if sawEnd { break }
    }
    guard colorType >= 0 else { throw WorldError.png("no IHDR chunk") }
    guard sawEnd else { throw WorldError.png("no IEND chunk (truncated file?)") }
    let channels = [0: 1, 2: 3, 4: 2, 6: 4][colorType]!
    let stride = width * channels
    let expected = height * (stride + 1)
    var raw = [UInt8](repeating: 0, count: expected)
    var rawSize = uLongf(expected)
    let status = uncompress(&raw, &rawSize, idat, uLong(idat.count))
    guard status == Z_OK, Int(rawSize) == expected else {
        throw WorldError.png("image data does not inflate to \(expected) bytes (zlib status \(status))")
    }

    var current = [UInt8](repeating: 0, count: stride)
    var previous = [UInt8](repeating: 0, count: stride)
    var pixels = [UInt8](repeating: 0, count: width * height * 3)
    for row in 0..<height {
        let start = row * (stride + 1)
        let filter = raw[start]
        for i in 0..<stride {
            let x = raw[start + 1 + i]
            let left = i >= channels ? current[i - channels] : 0
            let up = previous[i]
            let upLeft = i >= channels ? previous[i - channels] : 0
            switch filter {
            case 0: current[i] = x
            case 1: current[i] = x &+ left
            case 2: current[i] = x &+ up
            case 3: current[i] = x &+ UInt8((Int(left) + Int(up)) / 2)
            case 4: current[i] = x &+ paeth(left, up, upLeft)
            default: throw WorldError.png("unknown row filter \(filter) in row \(row)")
            }
        }
        for column in 0..<width {
            let source = column * channels, target = 3 * (row * width + column)
            if channels <= 2 {
                pixels[target] = current[source]; pixels[target + 1] = current[source]; pixels[target + 2] = current[source]
            } else {
                pixels[target] = current[source]; pixels[target + 1] = current[source + 1]; pixels[target + 2] = current[source + 2]
            }
        }
        swap(&current, &previous)
    }
    return RGBImage(width: width, height: height, pixels: pixels)
}

private func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
    let p = Int(a) + Int(b) - Int(c)
    let pa = abs(p - Int(a)), pb = abs(p - Int(b)), pc = abs(p - Int(c))
    if pa <= pb && pa <= pc { return a }
    return pb <= pc ? b : c
}

private func appendChunk(_ png: inout [UInt8], _ type: String, _ body: [UInt8]) {
    appendBigEndian(&png, UInt32(body.count))
    let typed = Array(type.utf8) + body
    png += typed
    appendBigEndian(&png, crc32Of(typed))
}

func zlibCompress(_ bytes: [UInt8]) -> [UInt8] {
    var compressedSize = compressBound(uLong(bytes.count))
    var compressed = [UInt8](repeating: 0, count: Int(compressedSize))
    let status = compress2(&compressed, &compressedSize, bytes, uLong(bytes.count), Z_BEST_COMPRESSION)
    precondition(status == Z_OK, "zlib compress2 failed with \(status)")
    compressed.removeLast(compressed.count - Int(compressedSize))
    return compressed
}

func crc32Of(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, uInt($0.count))) }
}

private func appendBigEndian(_ bytes: inout [UInt8], _ value: UInt32) {
    bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

private func readBigEndian(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
    UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
}
