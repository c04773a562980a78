import Foundation

/// The simple weights format shared with tools/torch_reference.py: `<base>.json` holds the
/// config and the parameter table, `<base>.bin` all parameters as little-endian float32 in table
/// order (the flat buffer as is).
public struct WeightsTable: Codable, Equatable {
    public struct Tensor: Codable, Equatable {
        public let name: String
        public let offset: Int
        public let shape: [Int]
    }
    public let config: ModelConfig
    public let tensors: [Tensor]
}

public struct WeightsFileError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "weights file: \(message)" }
}

extension Transformer {
    public func writeWeights(toBase base: URL) throws {
        let table = WeightsTable(config: config, tensors: parameterTable.map { .init(name: $0.name, offset: $0.offset, shape: $0.shape) })
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(table).write(to: base.appendingPathExtension("json"), options: .atomic)
        try Data(buffer: UnsafeBufferPointer(parameters)).write(to: base.appendingPathExtension("bin"), options: .atomic)
    }

    /// Loads parameters by name; the file's config must equal this model's.
    public func readWeights(fromBase base: URL) throws {
        let table = try JSONDecoder().decode(WeightsTable.self, from: Data(contentsOf: base.appendingPathExtension("json")))
        guard table.config == config else { throw WeightsFileError(message: "config differs from the model's") }
        let data = try Data(contentsOf: base.appendingPathExtension("bin"))
        for tensor in table.tensors {
            guard let entry = entry(named: tensor.name), entry.shape == tensor.shape else {
                throw WeightsFileError(message: "tensor \(tensor.name) \(tensor.shape) does not match the model")
            }
            let bytes = tensor.offset * 4..<(tensor.offset + entry.count) * 4
            guard bytes.upperBound <= data.count else { throw WeightsFileError(message: "\(tensor.name) past the end of the data") }
            data[bytes].withUnsafeBytes { raw in
                UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(parameters)[(entry.offset * 4)..<((entry.offset + entry.count) * 4)])
                    .copyMemory(from: raw)
            }
        }
    }
}
