import XCTest

@testable import ClusterRuntime
@testable import SUDERCluster

final class MemoryCheckTests: XCTestCase {
    /// A fake / with the given files, for the /proc and /sys readers.
    private func fakeRoot(_ files: [String: String]) throws -> String {
        let root = temporaryDirectory("memory-root")
        addTeardownBlock { try? FileManager.default.removeItem(at: root) }
        for (path, text) in files {
            let url = root.appendingPathComponent(String(path.dropFirst()))
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        }
        return root.path
    }

    private let meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n"

    func testAvailableMemoryIsTheTightestLimitSharedByTheNodesRanks() throws {
        // No cgroup limit ("max"): MemAvailable, split over the node's ranks.
        var root = try fakeRoot([
            "/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/user.slice/job\n",
            "/sys/fs/cgroup/user.slice/job/memory.max": "max\n",
        ])
        var available = try XCTUnwrap(memoryAvailablePerRank(environment: ["OMPI_COMM_WORLD_LOCAL_SIZE": "4"], root: root))
        XCTAssertEqual(available.bytes, 8_000_000 * 1024 / 4)
        XCTAssertTrue(available.source.contains("MemAvailable") && available.source.contains("4 ranks"), available.source)

        // cgroup v2 limit on a parent, below MemAvailable; Slurm's task count divides it.
        root = try fakeRoot([
            "/proc/meminfo": meminfo, "/proc/self/cgroup": "0::/slurm/job_7/step_0\n",
            "/sys/fs/cgroup/slurm/job_7/step_0/memory.max": "max\n",
            "/sys/fs/cgroup/slurm/job_7/memory.max": "4294967296\n",
        ])
        available = try XCTUnwrap(memoryAvailablePerRank(environment: ["SLURM_NTASKS_PER_NODE": "2"], root: root))
        XCTAssertEqual(available.bytes, 2 << 30)
        XCTAssertTrue(available.source.contains("/sys/fs/cgroup/slurm/job_7/memory.max"), available.source)

        // cgroup v1: memory.limit_in_bytes; "unlimited" is a value near 2^63.
        root = try fakeRoot([
            "/proc/meminfo": meminfo, "/proc/self/cgroup": "12:cpu,cpuacct:/x\n5:memory:/slurm/uid_0/job_9\n",
            "/sys/fs/cgroup/memory/slurm/uid_0/job_9/memory.limit_in_bytes": "1073741824\n",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        ])
        available = try XCTUnwrap(memoryAvailablePerRank(environment: [:], root: root))
        XCTAssertEqual(available.bytes, 1 << 30)

        XCTAssertNil(memoryAvailablePerRank(environment: [:], root: try fakeRoot([:])))
    }

    func testAModelThatDoesNotFitStopsWithTheStageAndItsParts() throws {
        let config = try ResolvedConfig.resolve(file: nil, overrides: ["suder.objective=dpo"])
        let comm = SingleProcessCommunicator()
        var table = ""
        try checkMemory(stageMemory(config), comm: comm, available: (64 << 30, "test")) { table += $0 }
        XCTAssertTrue(table.contains("suder") && table.contains("frozen reference model") && table.contains("AdamW state"), table)
        XCTAssertThrowsError(try checkMemory(stageMemory(config), comm: comm, available: (16 << 20, "test")) { _ in }) { error in
            let message = "\(error)"
            XCTAssertTrue(error is AllRanksError, message)
            XCTAssertTrue(message.contains("stage suder needs about") && message.contains("but a rank has 16.0 MB"), message)
        }
        // The reference model is counted where the stage loads one: DPO, and GRPO with its KL penalty.
        func suderBytes(_ overrides: [String]) throws -> Double {
            try stageMemory(ResolvedConfig.resolve(file: nil, overrides: overrides)).first { $0.stage == "suder" }!.total
        }
        let without = try suderBytes([])
        XCTAssertGreaterThan(try suderBytes(["suder.objective=dpo"]), without)
        XCTAssertGreaterThan(try suderBytes(["suder.objective=grpo"]), without)
        XCTAssertEqual(try suderBytes(["suder.objective=grpo", "suder.grpo_kl=0"]), without)
        // The largest config the schema allows is refused, not overflowed.
        let huge = try ResolvedConfig.resolve(
            file: nil,
            overrides: [
                "model.d_model=8192", "model.n_layers=128", "model.n_heads=128",
                "model.max_seq=4096", "model.micro_batch=4611686018427387904",
            ])
        XCTAssertThrowsError(try checkMemory(stageMemory(huge), comm: comm, available: (1 << 40, "test")) { _ in })
    }
}
