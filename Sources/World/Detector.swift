/// An object found in an image: GenEval's detector output (class, box, confidence) plus the
/// colour GenEval would ask CLIP for.
public struct DetectedObject: Equatable, Sendable {
    public var shape: ShapeClass
    public var color: ObjectColor
    public var box: Box
    /// Pixels in the object's mask.
    public var area: Int
    /// Intersection-over-union of the mask with the best shape template (1 on clean renders).
    public var confidence: Double

    public var centerX: Double { box.centerX }
    public var centerY: Double { box.centerY }
}

/// Detector thresholds (squared RGB distances and pixel counts), chosen so VQ-decoded edges
/// neither split objects nor add phantom ones; see docs/DATA.md.
public struct DetectorSettings: Sendable {
    /// A pixel farther than this from the background is foreground.
    public var foregroundDistance: Double = 60
    /// Components smaller than this many mask pixels are decoding noise, not objects.
    public var minimumArea: Int = 8
    public init() {}
}

/// Colour segmentation, connected components and shape classification: every foreground
/// component (8-connected) is one object; its colour is the majority palette colour of its
/// pixels; its mask keeps the pixels at least half-way from the background to that colour; its
/// class is the shape template (drawn into the mask's box) with the highest IoU.
public func detectObjects(in image: RGBImage, settings: DetectorSettings = DetectorSettings()) -> [DetectedObject] {
    let width = image.width, height = image.height, pixelCount = width * height
    let palette = ObjectColor.allCases
    let background = (Double(backgroundRGB.r), Double(backgroundRGB.g), Double(backgroundRGB.b))
    let thresholdSquared = settings.foregroundDistance * settings.foregroundDistance

    var foreground = [Bool](repeating: false, count: pixelCount)
    image.pixels.withUnsafeBufferPointer { rgb in
        for i in 0..<pixelCount {
            let dr = Double(rgb[3 * i]) - background.0, dg = Double(rgb[3 * i + 1]) - background.1
            let db = Double(rgb[3 * i + 2]) - background.2
            foreground[i] = dr * dr + dg * dg + db * db > thresholdSquared
        }
    }

    var label = [Int32](repeating: -1, count: pixelCount)
    var detections: [DetectedObject] = []
    var stack: [Int] = []
    var members: [Int] = []
    var component: Int32 = 0
    for seed in 0..<pixelCount where foreground[seed] && label[seed] < 0 {
        component += 1
        members.removeAll(keepingCapacity: true)
        stack.append(seed); label[seed] = component
        while let pixel = stack.popLast() {
            members.append(pixel)
            let x = pixel % width, y = pixel / width
            for ny in max(0, y - 1)...min(height - 1, y + 1) {
                for nx in max(0, x - 1)...min(width - 1, x + 1) {
                    let neighbour = ny * width + nx
                    if foreground[neighbour] && label[neighbour] < 0 { label[neighbour] = component; stack.append(neighbour) }
                }
            }
        }
        if let object = classifyComponent(members, image: image, palette: palette, background: background, settings: settings) {
            detections.append(object)
        }
    }
    return detections
}

private func classifyComponent(_ members: [Int], image: RGBImage, palette: [ObjectColor],
                               background: (Double, Double, Double), settings: DetectorSettings) -> DetectedObject? {
    let width = image.width
    // Colour: vote of each pixel's nearest palette colour.
    var votes = [Int](repeating: 0, count: palette.count)
    for pixel in members {
        let r = Double(image.pixels[3 * pixel]), g = Double(image.pixels[3 * pixel + 1]), b = Double(image.pixels[3 * pixel + 2])
        var best = 0, bestDistance = Double.infinity
        for (index, color) in palette.enumerated() {
            let rgb = color.rgb
            let dr = r - Double(rgb.r), dg = g - Double(rgb.g), db = b - Double(rgb.b)
            let distance = dr * dr + dg * dg + db * db
            if distance < bestDistance { bestDistance = distance; best = index }
        }
        votes[best] += 1
    }
    let color = palette[votes.indices.max { votes[$0] < votes[$1] || (votes[$0] == votes[$1] && $0 > $1) }!]

    // Mask: pixels whose projection on the background->colour axis is past the midpoint.
    let target = color.rgb
    let axis = (Double(target.r) - background.0, Double(target.g) - background.1, Double(target.b) - background.2)
    let axisSquared = axis.0 * axis.0 + axis.1 * axis.1 + axis.2 * axis.2
    var mask: [Int] = []
    var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
    for pixel in members {
        let r = Double(image.pixels[3 * pixel]) - background.0, g = Double(image.pixels[3 * pixel + 1]) - background.1
        let b = Double(image.pixels[3 * pixel + 2]) - background.2
        guard (r * axis.0 + g * axis.1 + b * axis.2) / axisSquared >= 0.5 else { continue }
        mask.append(pixel)
        let x = pixel % width, y = pixel / width
        minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
    }
    guard mask.count >= settings.minimumArea else { return nil }

    let boxWidth = maxX - minX + 1, boxHeight = maxY - minY + 1
    var inMask = [Bool](repeating: false, count: boxWidth * boxHeight)
    for pixel in mask { inMask[(pixel / width - minY) * boxWidth + (pixel % width - minX)] = true }
    var bestShape = ShapeClass.square, bestIoU = -1.0
    for shape in ShapeClass.allCases {
        var intersection = 0, union = 0
        for row in 0..<boxHeight {
            for column in 0..<boxWidth {
                let inTemplate = shapeContains(shape, column: column, row: row, width: boxWidth, height: boxHeight)
                let inObject = inMask[row * boxWidth + column]
                if inTemplate && inObject { intersection += 1 }
                if inTemplate || inObject { union += 1 }
            }
        }
        let iou = Double(intersection) / Double(max(union, 1))
        if iou > bestIoU { bestIoU = iou; bestShape = shape }
    }
    let box = Box(x1: Double(minX), y1: Double(minY), x2: Double(maxX + 1), y2: Double(maxY + 1))
    return DetectedObject(shape: bestShape, color: color, box: box, area: mask.count, confidence: bestIoU)
}
