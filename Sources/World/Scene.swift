/// The world's object classes. Raw values are stable: they appear in files.
public enum ShapeClass: String, CaseIterable, Codable, Sendable {
    case circle, square, triangle, cross

    public var plural: String {
        switch self {
        case .circle: return "circles"
        case .square: return "squares"
        case .triangle: return "triangles"
        case .cross: return "crosses"
        }
    }

    public init?(plural: String) {
        guard let shape = ShapeClass.allCases.first(where: { $0.plural == plural }) else { return nil }
        self = shape
    }
}

/// GenEval colours that stay distinguishable on the dark background (brown and black do not).
public enum ObjectColor: String, CaseIterable, Codable, Sendable {
    case red, orange, yellow, green, blue, purple, pink, white

    /// Flat sRGB value used by the renderer and as the detector's reference.
    public var rgb: (r: UInt8, g: UInt8, b: UInt8) {
        switch self {
        case .red: return (225, 30, 30)
        case .orange: return (255, 140, 0)
        case .yellow: return (245, 230, 30)
        case .green: return (30, 185, 60)
        case .blue: return (40, 90, 245)
        case .purple: return (150, 40, 210)
        case .pink: return (255, 125, 200)
        case .white: return (245, 245, 245)
        }
    }

    /// "a" or "an" before this colour word.
    public var article: String { self == .orange ? "an" : "a" }
}

/// Dark neutral grey: every palette colour is far from it, so foreground is easy to separate.
public let backgroundRGB: (r: UInt8, g: UInt8, b: UInt8) = (28, 28, 28)

/// Axis-aligned box in pixels, GenEval's `[x1, y1, x2, y2]` with exclusive right/bottom edges.
public struct Box: Equatable, Codable, Sendable {
    public var x1: Double, y1: Double, x2: Double, y2: Double
    public init(x1: Double, y1: Double, x2: Double, y2: Double) {
        self.x1 = x1; self.y1 = y1; self.x2 = x2; self.y2 = y2
    }
    public var centerX: Double { (x1 + x2) / 2 }
    public var centerY: Double { (y1 + y2) / 2 }
    public var width: Double { x2 - x1 }
    public var height: Double { y2 - y1 }
}

/// One flat-coloured object occupying the `size x size` square whose top-left pixel is (x, y).
public struct SceneObject: Equatable, Codable, Sendable {
    public var shape: ShapeClass
    public var color: ObjectColor
    public var x: Int
    public var y: Int
    public var size: Int

    public init(shape: ShapeClass, color: ObjectColor, x: Int, y: Int, size: Int) {
        self.shape = shape; self.color = color; self.x = x; self.y = y; self.size = size
    }

    public var box: Box {
        Box(x1: Double(x), y1: Double(y), x2: Double(x + size), y2: Double(y + size))
    }
}

/// What an image shows: the ground truth captions, probes and the oracle are derived from.
public struct Scene: Equatable, Codable, Sendable {
    public var objects: [SceneObject]
    public init(objects: [SceneObject]) { self.objects = objects }

    /// What makes two scenes the same scene, whatever the objects' order: each object's shape,
    /// colour, size and place.
    public var identity: [String] {
        objects.map { "\($0.shape.rawValue) \($0.color.rawValue) \($0.size) \($0.x) \($0.y)" }.sorted()
    }
}

/// Whether pixel (column, row) of a `width x height` box is inside `shape`. The same function
/// renders scenes and builds the detector's templates, so clean renders match a template exactly.
@inline(__always)
package func shapeContains(_ shape: ShapeClass, column: Int, row: Int, width: Int, height: Int) -> Bool {
    let w = Double(width), h = Double(height)
    let px = Double(column) + 0.5, py = Double(row) + 0.5
    switch shape {
    case .square:
        return true
    case .circle:
        let dx = (px - w / 2) / (w / 2), dy = (py - h / 2) / (h / 2)
        return dx * dx + dy * dy <= 1.0
    case .triangle:
        // Apex up; the row's half width grows linearly so the top row keeps one or two pixels.
        let halfWidth = (Double(row + 1) / h) * (w / 2)
        return abs(px - w / 2) <= halfWidth + 1e-9
    case .cross:
        let armX = crossArm(width), armY = crossArm(height)
        let inVertical = column >= (width - armX) / 2 && column < (width - armX) / 2 + armX
        let inHorizontal = row >= (height - armY) / 2 && row < (height - armY) / 2 + armY
        return inVertical || inHorizontal
    }
}

/// Arm thickness close to a third of the extent, with the extent's parity so the arm is centred.
@inline(__always)
package func crossArm(_ extent: Int) -> Int {
    let third = Double(extent) / 3
    var best = extent % 2 == 0 ? 2 : 1
    var candidate = best
    while candidate <= extent {
        if abs(Double(candidate) - third) < abs(Double(best) - third) { best = candidate }
        candidate += 2
    }
    return best
}
