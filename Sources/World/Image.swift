/// An 8-bit RGB raster, rows top to bottom, pixels interleaved `r g b`.
public struct RGBImage: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "RGBImage: \(pixels.count) bytes for \(width)x\(height)")
        self.width = width; self.height = height; self.pixels = pixels
    }

    public init(width: Int, height: Int, fill: (r: UInt8, g: UInt8, b: UInt8)) {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = fill.r; pixels[3 * i + 1] = fill.g; pixels[3 * i + 2] = fill.b
        }
        self.init(width: width, height: height, pixels: pixels)
    }
}

/// Draws a scene: flat colours, no anti-aliasing, on the background colour.
public func renderScene(_ scene: Scene, canvasSize: Int) -> RGBImage {
    var image = RGBImage(width: canvasSize, height: canvasSize, fill: backgroundRGB)
    for object in scene.objects {
        let rgb = object.color.rgb
        for row in 0..<object.size {
            let y = object.y + row
            guard y >= 0 && y < canvasSize else { continue }
            for column in 0..<object.size {
                let x = object.x + column
                guard x >= 0 && x < canvasSize,
                    shapeContains(object.shape, column: column, row: row, width: object.size, height: object.size)
                else { continue }
                let offset = 3 * (y * canvasSize + x)
                image.pixels[offset] = rgb.r; image.pixels[offset + 1] = rgb.g; image.pixels[offset + 2] = rgb.b
            }
        }
    }
    return image
}

/// Tiles images into one grid image (for sample sheets), `columns` wide, separated by `gap` pixels.
public func imageGrid(_ images: [RGBImage], columns: Int, gap: Int = 2) -> RGBImage {
    precondition(!images.isEmpty && columns > 0)
    let cellW = images[0].width, cellH = images[0].height
    let rows = (images.count + columns - 1) / columns
    let width = columns * cellW + (columns + 1) * gap
    let height = rows * cellH + (rows + 1) * gap
    var grid = RGBImage(width: width, height: height, fill: (128, 128, 128))
    for (index, image) in images.enumerated() {
        precondition(image.width == cellW && image.height == cellH, "imageGrid: images differ in size")
        let originX = gap + (index % columns) * (cellW + gap)
        let originY = gap + (index / columns) * (cellH + gap)
        for y in 0..<cellH {
            let source = 3 * y * cellW
            let target = 3 * ((originY + y) * width + originX)
            grid.pixels.replaceSubrange(target..<(target + 3 * cellW), with: image.pixels[source..<(source + 3 * cellW)])
        }
    }
    return grid
}
