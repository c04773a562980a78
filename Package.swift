// swift-tools-version:6.0
import PackageDescription

// Release builds of the numeric targets drop Swift's bounds and overflow checks in hot loops:
// the kernels index through unsafe pointers already, and the checks cost ~2x in the inner loops.
// Debug builds keep every check.
let numericSettings: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release)),
]

let package = Package(
    name: "suder",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "suder", targets: ["suder"]),
        .library(name: "SUDERCluster", targets: ["SUDERCluster"]),
        .library(name: "ClusterRuntime", targets: ["ClusterRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C shims: headers only, linked through pkg-config (Debian: libopenmpi-dev,
        // libopenblas-dev, libzstd-dev, zlib1g-dev).
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // AVX-512 and AVX2 kernels (sgemm, exponentials, the sampler's cached attention) in C: the
        // instruction set is enabled per function, not by global -m flags, so the binary runs on any
        // x86-64; the CPU is read at load time, the entry points run the active path
        // (SUDER_KERNELS, else the best the CPU has), and on the BLAS path OpenBLAS / libm do the work.
        // A persistent pthread pool splits the large ones over the rank's threads (pool.c).
        .target(name: "CKernels"),
        // The transformer: no MPI, no world, so it can be tested and benchmarked alone.
        .target(name: "Model", dependencies: ["CKernels", "COpenBLAS"], swiftSettings: numericSettings),
        // The synthetic world, tokenizers and every dataset file: no MPI. It does not depend on the
        // detector or the scorer, so no training label can come from the judge.
        .target(name: "World", dependencies: ["CZlib"], swiftSettings: numericSettings),
        // The judge: the detector, the GenEval-mini scorer and the oracle, built on the world.
        .target(name: "GenEvalMini", dependencies: ["World"], swiftSettings: numericSettings),
        // How ranks cooperate, whatever the job: the communicator (MPI or one process), the job
        // context and config resolution, the checkpoint store (zstd, xxhash), stop signals,
        // metric reduction and logs, sharding and stream seeds. Knows nothing of the model or the
        // world. COpenBLAS only to set the threads per rank (the model's kernels read the count
        // back); Yams parses the YAML configs, and its bundled libyaml (module CYaml, which comes with
        // the Yams product) gives the config reader the parser's events, to bound alias expansion
        // before Yams expands anything (Config/YAMLExpansion.swift).
        .target(
            name: "ClusterRuntime",
            dependencies: ["CMPI", "CZstd", "COpenBLAS", "Yams"],
            swiftSettings: numericSettings
        ),
        // What SUDER does: the config schema, the data, pretrain, suder and eval stages, report,
        // export and doctor, composing the runtime with the model, the world and the judge. No MPI here;
        // CZstd and COpenBLAS only for doctor's version report and zstd round trip.
        .target(
            name: "SUDERCluster",
            dependencies: ["ClusterRuntime", "CZstd", "COpenBLAS", "Model", "World", "GenEvalMini"],
            swiftSettings: numericSettings
        ),
        // Thin command line over SUDERCluster.
        .executableTarget(
            name: "suder",
            dependencies: ["SUDERCluster", "ClusterRuntime", "Model", "World", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Multi-rank checks run under a real `mpirun` by scripts/test; each rank verifies its own
        // result and the process exit code carries the verdict.
        .executableTarget(name: "suder-mpitests", dependencies: ["SUDERCluster", "ClusterRuntime", "Model"]),

        // Unit tests, one target per library under test; ModelTests' fixtures come from
        // tools/torch_reference.py. SUDERClusterTests also covers the runtime's checkpoint store,
        // config resolution and metrics (they share its test checkpoints).
        .testTarget(name: "ModelTests", dependencies: ["Model"], resources: [.copy("Fixtures")]),
        .testTarget(name: "WorldTests", dependencies: ["World", "GenEvalMini"]),
        .testTarget(name: "GenEvalMiniTests", dependencies: ["GenEvalMini"]),
        .testTarget(name: "SUDERClusterTests", dependencies: ["SUDERCluster", "ClusterRuntime", "GenEvalMini"]),
    ],
    // Swift 5 language mode: the kernels share unsafe buffers between OpenBLAS and Swift loops,
    // which Swift 6's strict Sendable checking cannot express without copies.
    swiftLanguageModes: [.v5]
)
