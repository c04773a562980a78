import Foundation

public struct PromptImagePair: Equatable, Sendable {
    public var prompt: [Int32]
    public var image: [Int32]
}

public struct CaptionExample: Equatable, Sendable {
    public var image: [Int32]
    public var caption: [Int32]
}

public struct ProbeExample: Equatable, Sendable {
    public var image: [Int32]
    public var question: [Int32]
    public var answer: Bool
}

/// A held-out image for understanding: its tokens and the scene captions are judged against.
public struct EvalImage: Equatable, Sendable {
    public var image: [Int32]
    public var scene: Scene
}

/// Reads a dataset written by `generateDataset`. Each accessor reads and validates its own files
/// only, so a SUDER run that asks for `unpairedPrompts()` and `unpairedImages()` never opens a
/// label file. Every token is checked to lie in this dataset's vocabulary and every field to
/// have the expected kind (text or image) and length.
public struct DatasetReader {
    public let directory: URL
    public let vocabulary: Vocabulary

    public init(directory: URL) throws {
        self.directory = directory
        vocabulary = try readVocabulary(directory.appendingPathComponent(DatasetFile.vocabulary))
        let trainPrompts = directory.appendingPathComponent(DatasetFile.prompts(.train))
        guard FileManager.default.fileExists(atPath: trainPrompts.path) else {
            throw WorldError.malformedFile(
                path: directory.path,
                reason: "no \(DatasetFile.prompts(.train)): the dataset was written before the "
                    + "train/dev/test splits; run the data stage again into a new run directory")
        }
    }

    private func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    public func codebook() throws -> VQCodebook {
        let codebook = try readCodebook(from: url(DatasetFile.codebook))
        guard codebook.codeCount == vocabulary.codebookSize else {
            throw WorldError.malformedFile(
                path: url(DatasetFile.codebook).path,
                reason: "\(codebook.codeCount) codes, vocabulary expects \(vocabulary.codebookSize)")
        }
        return codebook
    }

    private func shard(_ name: String, kind: String, fields: Int) throws -> TokenShard {
        try readTokenShard(url(name), kind: kind, fieldCount: fields, vocabularySize: vocabulary.size)
    }

    private enum FieldKind { case text, image, answer }

    /// Field `field` of `record`, checked for its kind: text of 1...maxCaptionTokens words, a
    /// square grid of image tokens, or a single yes/no word.
    private func checked(_ shard: TokenShard, _ record: Int, _ field: Int, _ kind: FieldKind, _ name: String) throws -> [Int32] {
        let tokens = Array(shard.field(record, field))
        func fail(_ reason: String) -> WorldError { .malformedFile(path: url(name).path, reason: "record \(record) field \(field): \(reason)") }
        switch kind {
        case .text:
            guard (1...maxCaptionTokens).contains(tokens.count), tokens.allSatisfy(vocabulary.textRange.contains) else {
                throw fail("expected 1...\(maxCaptionTokens) text tokens, found \(tokens.count) tokens")
            }
        case .image:
            let side = Int(Double(tokens.count).squareRoot())
            guard side > 0, side * side == tokens.count, tokens.allSatisfy(vocabulary.imageRange.contains) else {
                throw fail("expected a square grid of image tokens, found \(tokens.count) tokens")
            }
        case .answer:
            let answers = [try vocabulary.id(of: "yes"), try vocabulary.id(of: "no")]
            guard tokens.count == 1, answers.contains(tokens[0]) else {
                throw fail("expected a single yes/no token")
            }
        }
        return tokens
    }

    private func promptImagePairs(_ name: String, kind: String) throws -> [PromptImagePair] {
        let shard = try shard(name, kind: kind, fields: 2)
        return try (0..<shard.recordCount).map {
            PromptImagePair(prompt: try checked(shard, $0, 0, .text, name), image: try checked(shard, $0, 1, .image, name))
        }
    }

    public func trainPairs() throws -> [PromptImagePair] {
        try promptImagePairs(DatasetFile.trainPairs, kind: "train_pairs")
    }

    /// Damaged renders, each described from its scene and damage (`ImperfectRenderMaker`).
    public func trainImperfect() throws -> [PromptImagePair] {
        try promptImagePairs(DatasetFile.trainImperfect, kind: "train_imperfect")
    }

    public func trainCaptions() throws -> [CaptionExample] {
        let name = DatasetFile.trainCaptions
        let shard = try shard(name, kind: "train_captions", fields: 2)
        return try (0..<shard.recordCount).map {
            CaptionExample(image: try checked(shard, $0, 0, .image, name), caption: try checked(shard, $0, 1, .text, name))
        }
    }

    private func probes(_ name: String, kind: String) throws -> [ProbeExample] {
        let shard = try shard(name, kind: kind, fields: 3)
        let yes = try vocabulary.id(of: "yes")
        return try (0..<shard.recordCount).map {
            ProbeExample(
                image: try checked(shard, $0, 0, .image, name), question: try checked(shard, $0, 1, .text, name),
                answer: try checked(shard, $0, 2, .answer, name)[0] == yes)
        }
    }

    public func trainProbes() throws -> [ProbeExample] { try probes(DatasetFile.trainProbes, kind: "train_probes") }

    /// SUDER's unlabeled prompts (text tokens only).
    public func unpairedPrompts() throws -> [[Int32]] {
        let name = DatasetFile.unpairedPrompts
        let shard = try shard(name, kind: "unpaired_prompts", fields: 1)
        return try (0..<shard.recordCount).map { try checked(shard, $0, 0, .text, name) }
    }

    /// SUDER's unlabeled images (image tokens only).
    public func unpairedImages() throws -> [[Int32]] {
        let name = DatasetFile.unpairedImages
        let shard = try shard(name, kind: "unpaired_images", fields: 1)
        return try (0..<shard.recordCount).map { try checked(shard, $0, 0, .image, name) }
    }

    /// GenEval records of the unpaired prompts, line i for prompt i. Evaluation and oracle only.
    public func unpairedPromptRecords() throws -> [MetadataRecord] {
        try readMetadataFile(url(DatasetFile.unpairedPromptRecords))
    }

    /// Scenes of the unpaired images, line i for image i. Oracle and diagnostics only.
    public func unpairedImageScenes() throws -> [Scene] { try readScenes(url(DatasetFile.unpairedImageLabels)) }

    /// Every prompt of a split (`prompts/<split>.jsonl`).
    public func prompts(split: DataSplit) throws -> [MetadataRecord] { try readMetadataFile(url(DatasetFile.prompts(split))) }

    /// GenEval-mini's prompts of the dev split, the default eval set.
    public func evalMetadata() throws -> [MetadataRecord] { try evalMetadata(split: .dev) }

    /// GenEval-mini's prompts of an eval split (`eval/<split>/metadata.jsonl`).
    public func evalMetadata(split: EvalSplit) throws -> [MetadataRecord] { try readMetadataFile(url(DatasetFile.evalMetadata(split))) }

    /// The dev split's images for understanding, with their scenes, for caption scoring.
    public func evalImages() throws -> [EvalImage] { try evalImages(split: .dev) }

    /// An eval split's images for understanding, with their scenes.
    public func evalImages(split: EvalSplit) throws -> [EvalImage] {
        let name = DatasetFile.evalImages(split), scenesName = DatasetFile.evalScenes(split)
        let shard = try shard(name, kind: "eval_images", fields: 1)
        let scenes = try readScenes(url(scenesName))
        guard scenes.count == shard.recordCount else {
            throw WorldError.malformedFile(path: url(scenesName).path, reason: "\(scenes.count) scenes for \(shard.recordCount) images")
        }
        return try (0..<shard.recordCount).map { EvalImage(image: try checked(shard, $0, 0, .image, name), scene: scenes[$0]) }
    }

    /// The dev split's POPE probes.
    public func evalProbes(_ pope: PopeSplit) throws -> [ProbeExample] { try evalProbes(pope, split: .dev) }

    /// An eval split's POPE probes.
    public func evalProbes(_ pope: PopeSplit, split: EvalSplit) throws -> [ProbeExample] {
        try probes(DatasetFile.evalProbes(pope, split: split), kind: "pope_\(pope.rawValue)")
    }

    /// An eval split's ground truth in GenEval's folder layout (`eval/<split>/groundtruth`).
    public func evalGroundTruthDirectory(split: EvalSplit) -> URL { url(DatasetFile.evalGroundTruth(split)) }
}
