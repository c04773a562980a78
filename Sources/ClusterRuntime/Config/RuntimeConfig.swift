/// The config keys the runtime itself reads: how a job runs on its ranks and keeps checkpoints.
public let runtimeConfigFields: [ConfigField] = [
    ConfigField(
        "runtime.threads", .int(0...Int.max), .int(0),
        "threads per rank (the model's kernels and OpenBLAS); 0 = SLURM_CPUS_PER_TASK, else the cores this rank is bound to"),
    ConfigField(
        "runtime.progress", .choice(["auto", "bar", "lines", "off"]), .string("auto"),
        "progress output: a live bar on a terminal, periodic lines in batch logs"),
    ConfigField(
        "runtime.progress_interval", .double(0.1...3600), .double(10),
        "seconds between progress lines when not on a terminal"),
    ConfigField("checkpoint.keep_last", .int(1...Int.max), .int(3), "checkpoints kept per stage"),
    ConfigField("checkpoint.zstd_level", .int(-7...22), .int(3), "zstd compression level"),
    ConfigField("checkpoint.zstd_threads", .int(0...Int.max), .int(0), "zstd worker threads; 0 = single-threaded"),
]
