import World

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

/// Detector thresholds, chosen so VQ-decoded edges neither split objects nor add phantom ones.
public struct DetectorSettings: Sendable {
    /// A pixel belongs to colour c when it lies within this RGB distance of the segment from the
    /// background to c, at least half-way along it. Decoded pixels lie on a segment up to rounding;
    /// the margin tolerates small noise, while grey (120,120,120), 49 from the pink segment, is out.
    public var maximumRayDistance: Double = 24
    /// Components smaller than this many pixels are decoding noise, not objects.
    public var minimumArea: Int = 8
    public init() {}
}

/// Colour segmentation, connected components and shape classification.
///
/// Decoded patches blend the background and one object colour, so every object pixel lies on the
/// segment from the background to its colour. Each pixel takes the colour whose segment passes
/// closest (within `maximumRayDistance`) and its position t along it. Pixels with t >= 1/4 form
/// 8-connected components, which keeps an object whole even when a decoded edge thins it; inside
/// a component the pixels with t >= 1/2 (the decoded mask) are grouped by colour, and every colour
/// with at least `minimumArea` of them is one object, so touching objects of different colours
/// stay apart. An object's class is the shape template, drawn into its box by the renderer's own
/// function, with the highest IoU, which is also the confidence.
public func detectObjects(in image: RGBImage, settings: DetectorSettings = DetectorSettings()) -> [DetectedObject] {
    JudgeCalls.record()
    let width = image.width, height = image.height, pixelCount = width * height
    let palette = ObjectColor.allCases
    let background = (Double(backgroundRGB.r), Double(backgroundRGB.g), Double(backgroundRGB.b))
    let axes = palette.map { color -> (Double, Double, Double, Double) in
        let a = (Double(color.rgb.r) - background.0, Double(color.rgb.g) - background.1, Double(color.rgb.b) - background.2)
        return (a.0, a.1, a.2, a.0 * a.0 + a.1 * a.1 + a.2 * a.2)
    }
    let maximumSquared = settings.maximumRayDistance * settings.maximumRayDistance

    // Per pixel: palette index (-1 for none) and position along that colour's segment.
    var colorOf = [Int](repeating: -1, count: pixelCount)
    var strength = [Double](repeating: 0, count: pixelCount)
    image.pixels.withUnsafeBufferPointer { rgb in
        for i in 0..<pixelCount {
            let r = Double(rgb[3 * i]) - background.0, g = Double(rgb[3 * i + 1]) - background.1
            let b = Double(rgb[3 * i + 2]) - background.2
            var bestDistance = maximumSquared
            for (index, axis) in axes.enumerated() {
                let t = min(1, (r * axis.0 + g * axis.1 + b * axis.2) / axis.3)
                guard t >= 0.25 else { continue }
                let dr = r - t * axis.0, dg = g - t * axis.1, db = b - t * axis.2
                let distance = dr * dr + dg * dg + db * db
                if distance < bestDistance { bestDistance = distance; colorOf[i] = index; strength[i] = t }
            }
        }
    }

    var visited = [Bool](repeating: false, count: pixelCount)
    var detections: [DetectedObject] = []
    var stack: [Int] = []
    var members: [Int] = []
    var byColor = [[Int]](repeating: [], count: palette.count)
    for seed in 0..<pixelCount where colorOf[seed] >= 0 && !visited[seed] {
        members.removeAll(keepingCapacity: true)
        stack.append(seed); visited[seed] = true
        while let pixel = stack.popLast() {
            members.append(pixel)
            let x = pixel % width, y = pixel / width
            for ny in max(0, y - 1)...min(height - 1, y + 1) {
                for nx in max(0, x - 1)...min(width - 1, x + 1) {
                    let neighbour = ny * width + nx
                    if colorOf[neighbour] >= 0 && !visited[neighbour] { visited[neighbour] = true; stack.append(neighbour) }
                }
            }
        }
        for c in byColor.indices { byColor[c].removeAll(keepingCapacity: true) }
        for pixel in members where strength[pixel] >= 0.5 { byColor[colorOf[pixel]].append(pixel) }
        for (c, pixels) in byColor.enumerated() where pixels.count >= settings.minimumArea {
            detections.append(classifyShape(pixels, width: width, color: palette[c]))
        }
    }
    return detections
}

/// The shape template with the highest IoU against the object's pixels, in the object's box.
private func classifyShape(_ members: [Int], width: Int, color: ObjectColor) -> DetectedObject {
    var minX = Int.max, minY = Int.max, maxX = Int.min, maxY = Int.min
    for pixel in members {
        let x = pixel % width, y = pixel / width
        minX = min(minX, x); maxX = max(maxX, x); minY = min(minY, y); maxY = max(maxY, y)
    }
    let boxWidth = maxX - minX + 1, boxHeight = maxY - minY + 1
    var inMask = [Bool](repeating: false, count: boxWidth * boxHeight)
    for pixel in members { inMask[(pixel / width - minY) * boxWidth + (pixel % width - minX)] = true }
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
    return DetectedObject(shape: bestShape, color: color, box: box, area: members.count, confidence: bestIoU)
}
