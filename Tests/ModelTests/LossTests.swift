import XCTest

@testable import Model

final class LossTests: XCTestCase {
    func testSimPOClosedForms() {
        // Equal normalised log-probs and gamma 0: z = 0, loss ln 2, coefficients -+beta/(2|y|).
        let equal = simpoLoss(chosenLogProbs: [-6], chosenLengths: [3], rejectedLogProbs: [-8], rejectedLengths: [4], beta: 2, gamma: 0)
        XCTAssertEqual(equal.losses[0], log(2), accuracy: 1e-12)
        XCTAssertEqual(equal.chosenGradients[0], -0.5 * 2 / 3, accuracy: 1e-12)
        XCTAssertEqual(equal.rejectedGradients[0], 0.5 * 2 / 4, accuracy: 1e-12)
        XCTAssertEqual(equal.chosenRewards[0], -4, accuracy: 1e-12)
        // Swapping chosen and rejected flips the sign of z: L(z) - L(-z) = -z.
        let a = simpoLoss(chosenLogProbs: [-3], chosenLengths: [2], rejectedLogProbs: [-9], rejectedLengths: [3], beta: 2, gamma: 0)
        let b = simpoLoss(chosenLogProbs: [-9], chosenLengths: [3], rejectedLogProbs: [-3], rejectedLengths: [2], beta: 2, gamma: 0)
        let z = 2.0 * (-3.0 / 2) - 2.0 * (-9.0 / 3)
        XCTAssertEqual(a.losses[0] - b.losses[0], -z, accuracy: 1e-12)
        XCTAssertEqual(a.meanMargin, -b.meanMargin, accuracy: 1e-12)
        XCTAssertEqual(a.accuracy, 1)
        XCTAssertEqual(b.accuracy, 0)
        // Extreme margins stay finite.
        let extreme = simpoLoss(chosenLogProbs: [-1], chosenLengths: [1], rejectedLogProbs: [-1e6], rejectedLengths: [1])
        XCTAssertEqual(extreme.losses[0], 0, accuracy: 1e-12)
        let reversed = simpoLoss(chosenLogProbs: [-1e6], chosenLengths: [1], rejectedLogProbs: [-1], rejectedLengths: [1])
        XCTAssertTrue(reversed.losses[0].isFinite && reversed.losses[0] > 1e6)
    }

    func testDPOClosedForms() {
        let equal = dpoLoss(chosenLogProbs: [-5], rejectedLogProbs: [-7], referenceChosenLogProbs: [-5], referenceRejectedLogProbs: [-7], beta: 0.1)
        XCTAssertEqual(equal.losses[0], log(2), accuracy: 1e-12)
        XCTAssertEqual(equal.chosenGradients[0], -0.05, accuracy: 1e-12)
        XCTAssertEqual(equal.rejectedGradients[0], 0.05, accuracy: 1e-12)
        let a = dpoLoss(chosenLogProbs: [-2], rejectedLogProbs: [-9], referenceChosenLogProbs: [-4], referenceRejectedLogProbs: [-6], beta: 0.5)
        let b = dpoLoss(chosenLogProbs: [-9], rejectedLogProbs: [-2], referenceChosenLogProbs: [-6], referenceRejectedLogProbs: [-4], beta: 0.5)
        let z = 0.5 * (-2.0 + 4) - 0.5 * (-9.0 + 6)
        XCTAssertEqual(a.losses[0] - b.losses[0], -z, accuracy: 1e-12)
    }

    /// Finite differences (in Double) of the per-pair losses w.r.t. the policy log-probs.
    func testPreferenceGradientsMatchFiniteDifferences() {
        let h = 1e-6
        let w = [-12.5, -3.0, -40.0], l = [-10.0, -7.5, -35.0], nw = [5.0, 2.0, 9.0], nl = [4.0, 3.0, 11.0]
        let rw = [-11.0, -4.0, -41.0], rl = [-9.0, -7.0, -30.0]
        let simpo = simpoLoss(chosenLogProbs: w, chosenLengths: nw, rejectedLogProbs: l, rejectedLengths: nl)
        let dpo = dpoLoss(chosenLogProbs: w, rejectedLogProbs: l, referenceChosenLogProbs: rw, referenceRejectedLogProbs: rl)
        for i in 0..<3 {
            func shifted(_ x: [Double], _ d: Double) -> [Double] { var y = x; y[i] += d; return y }
            let simpoW =
                (simpoLoss(chosenLogProbs: shifted(w, h), chosenLengths: nw, rejectedLogProbs: l, rejectedLengths: nl).losses[i]
                    - simpoLoss(chosenLogProbs: shifted(w, -h), chosenLengths: nw, rejectedLogProbs: l, rejectedLengths: nl).losses[i]) / (2 * h)
            let simpoL =
                (simpoLoss(chosenLogProbs: w, chosenLengths: nw, rejectedLogProbs: shifted(l, h), rejectedLengths: nl).losses[i]
                    - simpoLoss(chosenLogProbs: w, chosenLengths: nw, rejectedLogProbs: shifted(l, -h), rejectedLengths: nl).losses[i]) / (2 * h)
            XCTAssertEqual(simpo.chosenGradients[i], simpoW, accuracy: 1e-8)
            XCTAssertEqual(simpo.rejectedGradients[i], simpoL, accuracy: 1e-8)
            let dpoW =
                (dpoLoss(chosenLogProbs: shifted(w, h), rejectedLogProbs: l, referenceChosenLogProbs: rw, referenceRejectedLogProbs: rl).losses[i]
                    - dpoLoss(chosenLogProbs: shifted(w, -h), rejectedLogProbs: l, referenceChosenLogProbs: rw, referenceRejectedLogProbs: rl).losses[i])
                / (2 * h)
            let dpoL =
                (dpoLoss(chosenLogProbs: w, rejectedLogProbs: shifted(l, h), referenceChosenLogProbs: rw, referenceRejectedLogProbs: rl).losses[i]
                    - dpoLoss(chosenLogProbs: w, rejectedLogProbs: shifted(l, -h), referenceChosenLogProbs: rw, referenceRejectedLogProbs: rl).losses[i])
                / (2 * h)
            XCTAssertEqual(dpo.chosenGradients[i], dpoW, accuracy: 1e-8)
            XCTAssertEqual(dpo.rejectedGradients[i], dpoL, accuracy: 1e-8)
        }
    }

    func testScheduleWarmupAndCosine() {
        let schedule = LearningRateSchedule(peak: 1e-3, warmupSteps: 10, totalSteps: 110, minRatio: 0.1)
        XCTAssertEqual(schedule.rate(atStep: 5), 5e-4, accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(atStep: 10), 1e-3, accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(atStep: 60), 1e-3 * (0.1 + 0.9 * 0.5), accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(atStep: 110), 1e-4, accuracy: 1e-9)
        XCTAssertEqual(schedule.rate(atStep: 500), 1e-4, accuracy: 1e-9)
    }

    func testClipGradients() {
        var g: [Float] = [3, 4, 0]
        let norm = g.withUnsafeMutableBufferPointer { clipGradients($0, maxNorm: 1) }
        XCTAssertEqual(norm, 5, accuracy: 1e-6)
        XCTAssertEqual(g[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(g[1], 0.8, accuracy: 1e-5)
        var small: [Float] = [0.3, 0.4]
        _ = small.withUnsafeMutableBufferPointer { clipGradients($0, maxNorm: 1) }
        XCTAssertEqual(small, [0.3, 0.4])
    }

    func testRNGIsReproducible() {
        var a = Xoshiro256RNG(seed: 42), b = Xoshiro256RNG(seed: 42), c = Xoshiro256RNG(seed: 43)
        let first = (0..<5).map { _ in a.next() }
        XCTAssertEqual(first, (0..<5).map { _ in b.next() })
        XCTAssertNotEqual(first, (0..<5).map { _ in c.next() })
        var u = Xoshiro256RNG(seed: 1)
        let uniforms = (0..<10_000).map { _ in u.nextUniform() }
        XCTAssertTrue(uniforms.allSatisfy { $0 >= 0 && $0 < 1 })
        XCTAssertEqual(uniforms.reduce(0, +) / 10_000, 0.5, accuracy: 0.02)
    }
}
