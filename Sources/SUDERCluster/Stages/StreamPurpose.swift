/// Names of independent random streams: the first part after the run seed in `streamSeed`.
enum StreamPurpose {
    static let initialisation: UInt64 = 1
    static let pretrainData: UInt64 = 2
    static let evalImage: UInt64 = 3
    static let suderRoundItems: UInt64 = 4
    static let suderImage: UInt64 = 5
    static let suderCaption: UInt64 = 6
    static let evalCaption: UInt64 = 7
    static let suderPairing: UInt64 = 8
}
