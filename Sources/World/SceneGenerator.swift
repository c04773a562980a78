/// Draws random scenes that satisfy a GenEval metadata record: the record fixes classes, counts,
/// colours and relations; sizes, places and unspecified colours are random.
public struct SceneGenerator: Sendable {
    public var canvasSize: Int
    public var minObjectSize: Int
    public var maxObjectSize: Int
    /// Background pixels kept between any two objects along x or y. At least the patch size, so
    /// no image patch holds two objects and VQ decoding cannot blend them.
    public var minimumGap: Int
    /// Object corners lie on multiples of this many pixels (1 = anywhere). A coarser lattice
    /// means fewer distinct patch shapes, so a smaller codebook round-trips losslessly.
    public var positionStep: Int = 1
    /// Position scenes must satisfy their relation under this stricter margin than GenEval's 0.1,
    /// so the relation survives the VQ round trip's one-pixel edge shifts.
    public var positionMargin: Double = 0.25

    public init(canvasSize: Int, minObjectSize: Int, maxObjectSize: Int, minimumGap: Int) {
        self.canvasSize = canvasSize; self.minObjectSize = minObjectSize
        self.maxObjectSize = maxObjectSize; self.minimumGap = minimumGap
    }

    /// A scene satisfying `record` exactly: the included objects and nothing else, each unspecified
    /// colour drawn among those `allowed` for its shape (a split's scenes never show another
    /// split's held-out combinations).
    public func scene(
        for record: MetadataRecord, allowed: Set<ObjectKind> = Set(ObjectKind.all),
        using generator: inout SplitMix64RNG
    ) -> Scene {
        precondition(namedCombinations(record).allSatisfy(allowed.contains), "SceneGenerator: '\(record.prompt)' names a combination this split may not show")
        var wanted: [(shape: ShapeClass, color: ObjectColor?)] = []
        for requirement in record.include {
            for _ in 0..<requirement.count { wanted.append((requirement.shape, requirement.color)) }
        }
        // Larger scenes get smaller objects so they fit the canvas with their gaps.
        let largest = wanted.count >= 3 ? max(minObjectSize, min(maxObjectSize, (canvasSize - 3 * minimumGap) / 2)) : maxObjectSize
        precondition((1...4).contains(wanted.count), "SceneGenerator: the world draws 1...4 objects, '\(record.prompt)' asks for \(wanted.count)")
        for _ in 0..<100_000 {
            var objects: [SceneObject] = []
            for item in wanted {
                let color =
                    item.color ?? ObjectColor.allCases.filter { allowed.contains(ObjectKind(color: $0, shape: item.shape)) }
                    .randomElement(using: &generator)!
                guard let placed = place(shape: item.shape, color: color, among: objects, largest: largest, using: &generator) else { break }
                objects.append(placed)
            }
            guard objects.count == wanted.count else { continue }
            if satisfiesPositions(record, objects) { return Scene(objects: objects) }
        }
        preconditionFailure("SceneGenerator: no placement satisfies '\(record.prompt)'")
    }

    private func place(
        shape: ShapeClass, color: ObjectColor, among objects: [SceneObject], largest: Int,
        using generator: inout SplitMix64RNG
    ) -> SceneObject? {
        for _ in 0..<100 {
            let size = Int.random(in: minObjectSize...largest, using: &generator)
            let slots = (canvasSize - 2 - size) / positionStep  // corner in 1...(canvas - 1 - size)
            let candidate = SceneObject(
                shape: shape, color: color,
                x: 1 + positionStep * Int.random(in: 0...slots, using: &generator),
                y: 1 + positionStep * Int.random(in: 0...slots, using: &generator), size: size)
            if objects.allSatisfy({ separated($0, candidate) }) { return candidate }
        }
        return nil
    }

    private func separated(_ a: SceneObject, _ b: SceneObject) -> Bool {
        let gapX = max(b.x - (a.x + a.size), a.x - (b.x + b.size))
        let gapY = max(b.y - (a.y + a.size), a.y - (b.y + b.size))
        return gapX >= minimumGap || gapY >= minimumGap
    }

    /// Objects were appended in include order, one per counted instance.
    private func satisfiesPositions(_ record: MetadataRecord, _ objects: [SceneObject]) -> Bool {
        var firstIndex: [Int] = []
        var next = 0
        for requirement in record.include { firstIndex.append(next); next += requirement.count }
        for (clause, requirement) in record.include.enumerated() {
            guard let position = requirement.position else { continue }
            let targetClause = record.include[position.target]
            for i in firstIndex[clause]..<(firstIndex[clause] + requirement.count) {
                for j in firstIndex[position.target]..<(firstIndex[position.target] + targetClause.count) {
                    if !genEvalRelations(of: objects[i].box, relativeTo: objects[j].box, threshold: positionMargin).contains(position.relation) {
                        return false
                    }
                }
            }
        }
        return true
    }
}
