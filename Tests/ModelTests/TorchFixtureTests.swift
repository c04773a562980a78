import Foundation
import XCTest

@testable import Model

/// Checks against tools/torch_reference.py (`python3 tools/torch_reference.py fixture`), which
/// computes in float64 from float32-representable weights, so every difference below is our
/// float32 rounding. Weights have std 0.3, logits reach ~10 and per-sequence sums ~-40.
/// Tolerances are the observed float32 errors (printed by the test) with ~10x headroom:
///   logits 2e-5 absolute (seen 2e-6); sums 2e-5 absolute (seen 2e-6); gradients 2e-5 of each
///   tensor's largest |g| (seen 1.4e-6); parameters after 3 AdamW steps 1e-4 absolute (seen 1.7e-5:
///   Adam divides by sqrt(v), which magnifies float noise in near-zero gradients; an Adam step
///   moves a parameter by ~lr = 1e-2, so a wrong gradient or moment shows up at 1e-3 and above).
final class TorchFixtureTests: XCTestCase {
    struct Fixture: Decodable {
        struct AdamWRun: Decodable {
            let learningRates: [Float]
            let maxNorm: Float
            let beta1, beta2, eps: Float
            let weight_decay: Float
            let objectives: [Double]
            let gradientNorms: [Double]
            let parametersAfter: [String: [Double]]
        }
        let config: ModelConfig
        let batch, seqLen: Int
        let lengths: [Int]
        let tokens: [Int32]
        let weights: [Float]
        let coefficients: [Float]
        let parameters: [String: [Double]]
        let logits: [Double]
        let sums: [Double]
        let gradients: [String: [Double]]
        let adamw: AdamWRun
    }

    func load(_ name: String) throws -> Fixture {
        let url = try XCTUnwrap(Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    func check(_ name: String) throws {
        let f = try load(name)
        let model = Transformer(config: f.config, seed: 0, batchCapacity: f.batch)
        XCTAssertEqual(Set(model.parameterTable.map(\.name)), Set(f.parameters.keys), "tensor names match the reference")
        for entry in model.parameterTable {
            let values = try XCTUnwrap(f.parameters[entry.name])
            XCTAssertEqual(values.count, entry.count, entry.name)
            for i in 0..<entry.count { model.parameters[entry.offset + i] = Float(values[i]) }
        }
        var batch = TokenBatch(batchSize: f.batch, seqLen: f.seqLen)
        batch.tokens = f.tokens
        batch.weights = f.weights
        batch.lengths = f.lengths

        let logits = model.logits(batch)
        let logitError = maxDifference(logits.map(Double.init), f.logits)
        XCTAssertLessThan(logitError, 2e-5, "\(name) logits")
        model.zeroGradients()
        let sums = model.forward(batch)
        XCTAssertLessThan(maxDifference(sums, f.sums), 2e-5, "\(name) sums")
        model.backward(sequenceCoefficients: f.coefficients)
        var worstGradient = 0.0
        for entry in model.parameterTable {
            let expected = try XCTUnwrap(f.gradients[entry.name])
            let scale = max(1e-6, expected.map(abs).max()!)
            let actual = (0..<entry.count).map { Double(model.gradients[entry.offset + $0]) }
            let error = maxDifference(actual, expected) / scale
            worstGradient = max(worstGradient, error)
            XCTAssertLessThan(error, 2e-5, "\(name) gradient \(entry.name)")
        }

        // Reload the initial weights and replay the AdamW run: clip, then step.
        for entry in model.parameterTable {
            let values = f.parameters[entry.name]!
            for i in 0..<entry.count { model.parameters[entry.offset + i] = Float(values[i]) }
        }
        let run = f.adamw
        let optimizer = AdamW(
            parameterTable: model.parameterTable, parameterCount: model.parameterCount,
            beta1: run.beta1, beta2: run.beta2, epsilon: run.eps, weightDecay: run.weight_decay)
        for (step, lr) in run.learningRates.enumerated() {
            model.zeroGradients()
            let objective = zip(model.forward(batch), f.coefficients).reduce(0) { $0 + $1.0 * Double($1.1) }
            XCTAssertEqual(objective, run.objectives[step], accuracy: 2e-3, "\(name) objective at step \(step)")
            model.backward(sequenceCoefficients: f.coefficients)
            let norm = clipGradients(model.gradients, maxNorm: run.maxNorm)
            XCTAssertEqual(Double(norm), run.gradientNorms[step], accuracy: 1e-4 * run.gradientNorms[step], "\(name) norm at step \(step)")
            optimizer.update(parameters: model.parameters, gradients: model.gradients, learningRate: lr)
        }
        var worstParameter = 0.0
        for entry in model.parameterTable {
            let expected = try XCTUnwrap(run.parametersAfter[entry.name])
            let actual = (0..<entry.count).map { Double(model.parameters[entry.offset + $0]) }
            worstParameter = max(worstParameter, maxDifference(actual, expected))
            XCTAssertLessThan(maxDifference(actual, expected), 1e-4, "\(name) AdamW parameters \(entry.name)")
        }
        print(
            "\(name): worst logit error \(logitError), sums \(maxDifference(sums, f.sums)), "
                + "relative gradient \(worstGradient), parameters after AdamW \(worstParameter)")
    }

    func testUntiedMatchesPyTorch() throws { try check("fixture_untied") }
    func testTiedMatchesPyTorch() throws { try check("fixture_tied") }

    func testWeightsFileRoundTrip() throws {
        let model = Transformer(config: tinyConfig, seed: 77)
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("suder-weights-\(getpid())")
        try model.writeWeights(toBase: base)
        defer {
            try? FileManager.default.removeItem(at: base.appendingPathExtension("json"))
            try? FileManager.default.removeItem(at: base.appendingPathExtension("bin"))
        }
        let other = Transformer(config: tinyConfig, seed: 78)
        XCTAssertNotEqual(Array(other.parameters), Array(model.parameters))
        try other.readWeights(fromBase: base)
        XCTAssertEqual(Array(other.parameters), Array(model.parameters))
    }
}
