/// One token space for the model: specials, then the world's closed set of words, then one token
/// per VQ code. Layout (ids):
///
///     0 PAD  1 BOS  2 EOS  3 BOI  4 EOI  5 CAPTION  6 PROMPT | text words (textRange) | image codes (imageRange)
public struct Vocabulary: Equatable, Sendable {
    public static let pad: Int32 = 0
    public static let bos: Int32 = 1
    public static let eos: Int32 = 2
    public static let boi: Int32 = 3
    public static let eoi: Int32 = 4
    public static let captionMarker: Int32 = 5
    public static let promptMarker: Int32 = 6
    public static let specialNames = ["<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<caption>", "<prompt>"]

    /// Every word any prompt, caption, question or answer uses, in id order. Appending words is
    /// safe for old datasets only if image ids move too, so datasets store their vocabulary.
    public static let worldWords: [String] =
        ["a", "an", "photo", "of", "and", "left", "right", "above", "below", "two", "three", "four"]
        + ShapeClass.allCases.flatMap { [$0.rawValue, $0.plural] }
        + ObjectColor.allCases.map(\.rawValue)
        + [":", ",", "is", "there", "?", "yes", "no", "nothing"]

    public let words: [String]
    public let codebookSize: Int
    private let wordIds: [String: Int32]

    public init(codebookSize: Int, words: [String] = Vocabulary.worldWords) {
        precondition(codebookSize > 0, "Vocabulary: codebook size must be positive")
        self.words = words
        self.codebookSize = codebookSize
        var ids: [String: Int32] = [:]
        for (index, word) in words.enumerated() { ids[word] = Int32(Vocabulary.specialNames.count + index) }
        wordIds = ids
    }

    public static func == (a: Vocabulary, b: Vocabulary) -> Bool { a.words == b.words && a.codebookSize == b.codebookSize }

    public var textRange: Range<Int32> { Int32(Vocabulary.specialNames.count)..<Int32(Vocabulary.specialNames.count + words.count) }
    public var imageRange: Range<Int32> { textRange.upperBound..<(textRange.upperBound + Int32(codebookSize)) }
    public var size: Int { Int(imageRange.upperBound) }

    public func id(of word: String) throws -> Int32 {
        guard let id = wordIds[word] else { throw WorldError.unknownWord(word) }
        return id
    }

    /// Splits on spaces, with `?`, `,` and `:` as words of their own even when attached.
    public static func splitWords(_ text: String) -> [String] {
        var result: [String] = []
        for piece in text.lowercased().split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }) {
            var word = ""
            for character in piece {
                if character == "?" || character == "," || character == ":" {
                    if !word.isEmpty { result.append(word); word = "" }
                    result.append(String(character))
                } else {
                    word.append(character)
                }
            }
            if !word.isEmpty { result.append(word) }
        }
        return result
    }

    /// Text to word ids (no BOS/EOS). An unknown word throws `WorldError.unknownWord`.
    public func encode(_ text: String) throws -> [Int32] {
        try Vocabulary.splitWords(text).map(id(of:))
    }

    /// Word ids back to text, words joined by single spaces. Throws on a non-text id.
    public func decode<C: Collection>(_ tokens: C) throws -> String where C.Element == Int32 {
        try tokens.map { token -> String in
            guard textRange.contains(token) else { throw WorldError.invalidTokens("id \(token) is not a text token \(textRange)") }
            return words[Int(token - textRange.lowerBound)]
        }.joined(separator: " ")
    }

    /// Text tokens until the first EOS (or the end); stops early at any non-text token.
    public func decodeUntilEOS<C: Collection>(_ tokens: C) throws -> String where C.Element == Int32 {
        let text = tokens.prefix { $0 != Vocabulary.eos }
        return try decode(text)
    }

    public func imageTokens<C: Collection>(codes: C) -> [Int32] where C.Element == Int32 {
        codes.map { code in
            precondition(code >= 0 && Int(code) < codebookSize, "code \(code) outside the codebook")
            return code + imageRange.lowerBound
        }
    }

    /// Image token ids to codebook indices; throws on any id outside `imageRange`.
    public func imageCodes<C: Collection>(tokens: C) throws -> [Int32] where C.Element == Int32 {
        try tokens.map { token in
            guard imageRange.contains(token) else { throw WorldError.invalidTokens("id \(token) is not an image token \(imageRange)") }
            return token - imageRange.lowerBound
        }
    }

    /// Readable rendering of any ids, for logs: words, `<boi>`-style specials, `#code` for images.
    public func describe<C: Collection>(_ tokens: C) -> String where C.Element == Int32 {
        tokens.map { token in
            if token >= 0 && Int(token) < Vocabulary.specialNames.count { return Vocabulary.specialNames[Int(token)] }
            if textRange.contains(token) { return words[Int(token - textRange.lowerBound)] }
            if imageRange.contains(token) { return "#\(token - imageRange.lowerBound)" }
            return "<invalid \(token)>"
        }.joined(separator: " ")
    }
}

/// What an understanding sequence asks for, marked by the special token after EOI: a full
/// caption (every object with its colour, as caption accuracy scores it) or the short prompt a
/// user would have written for the image (GenEval's templates). SUDER's generation reward scores
/// its prompt as the latter, so the reward does not hinge on how likely the model finds the
/// prompt's wording next to the longer caption it would write.
public enum UnderstandingTask: Sendable {
    case caption, prompt

    var marker: Int32 { self == .caption ? Vocabulary.captionMarker : Vocabulary.promptMarker }
}

/// A training or scoring sequence: `tokens`, and the positions whose tokens are predicted
/// (position i is predicted from `tokens[..<i]`), so the trainer weights exactly those.
public struct TokenSequence: Equatable, Sendable {
    public var tokens: [Int32]
    public var targetRange: Range<Int>
}

/// Longest prompt (`a photo of an orange circle and a yellow cross`) is 10 words.
public let maxPromptTokens = 14
/// Canonical captions need at most 13 words; questions plus answer 7.
public let maxCaptionTokens = 30

public extension Vocabulary {
    /// `BOS <prompt> BOI <image> EOI`; targets: the image tokens and EOI.
    func generationSequence(prompt: [Int32], image: [Int32]) -> TokenSequence {
        let tokens = [Vocabulary.bos] + prompt + [Vocabulary.boi] + image + [Vocabulary.eoi]
        return TokenSequence(tokens: tokens, targetRange: (prompt.count + 2)..<tokens.count)
    }

    /// The prefix a sampler extends to generate an image: `BOS <prompt> BOI`.
    func generationPrefix(prompt: [Int32]) -> [Int32] { [Vocabulary.bos] + prompt + [Vocabulary.boi] }

    /// The classifier-free-guidance null prompt: `BOS`, `promptLength` PADs, `BOI` (Janus-style
    /// padding keeps positions aligned with the conditional prefix; 0 gives `BOS BOI`).
    func nullGenerationPrefix(promptLength: Int = 0) -> [Int32] {
        [Vocabulary.bos] + [Int32](repeating: Vocabulary.pad, count: promptLength) + [Vocabulary.boi]
    }

    /// `BOS BOI <image> EOI <task> <text> EOS`; targets: the text and EOS.
    func understandingSequence(image: [Int32], task: UnderstandingTask, text: [Int32]) -> TokenSequence {
        let prefix = understandingPrefix(image: image, task: task)
        let tokens = prefix + text + [Vocabulary.eos]
        return TokenSequence(tokens: tokens, targetRange: prefix.count..<tokens.count)
    }

    /// The prefix a sampler extends to describe an image: `BOS BOI <image> EOI <task>`.
    func understandingPrefix(image: [Int32], task: UnderstandingTask) -> [Int32] { probePrefix(image: image) + [task.marker] }

    /// The prefix a probe's question follows: `BOS BOI <image> EOI`.
    func probePrefix(image: [Int32]) -> [Int32] { [Vocabulary.bos, Vocabulary.boi] + image + [Vocabulary.eoi] }

    /// A POPE probe as an understanding sequence: `BOS BOI <image> EOI <question> <yes|no> EOS`;
    /// targets: the answer and EOS only.
    func probeSequence(image: [Int32], question: [Int32], answer: Bool) throws -> TokenSequence {
        let answerToken = try id(of: answer ? "yes" : "no")
        let tokens = probePrefix(image: image) + question + [answerToken, Vocabulary.eos]
        return TokenSequence(tokens: tokens, targetRange: (tokens.count - 2)..<tokens.count)
    }
}
