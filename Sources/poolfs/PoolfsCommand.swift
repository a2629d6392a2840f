import ArgumentParser
import PoolCore
import PoolFUSE
import PoolNet

@main
struct PoolfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "poolfs",
        abstract: "A memory pool made of shelves, addressed by global addresses.",
        discussion: """
            Pools live in /dev/shm/poolfs/NAME unless --path DIR puts them at DIR/NAME.
            Sizes take binary units: 64K, 512M, 4G.
            """,
        subcommands: [
            CreateCommand.self, InfoCommand.self, GrowCommand.self, DestroyCommand.self, MountCommand.self,
            HeapCommand.self, RegionCommand.self, CheckCommand.self, TrimCommand.self, ExecCommand.self,
            SnapshotCommand.self, CheckpointCommand.self, RestoreCommand.self, ServeCommand.self, KeyCommand.self, RemoteCommand.self, BenchCommand.self,
        ])
}

/// Where the pool lives; every command that names a pool takes it.
struct PoolLocation: ParsableArguments {
    @Argument(help: "The pool's name.")
    var name: String

    @Option(name: .long, help: ArgumentHelp("Keep the pool at DIR/NAME instead of \(Pool.defaultHome)/NAME.",
                                            valueName: "DIR"))
    var path: String?
}

extension PoolLocation {
    /// Opens the pool for the length of `body`; errors become one line.
    func withPool(_ body: (Pool) throws -> Void) throws {
        try reportingErrors {
            // Remote shelves reach their nodes through PoolNet.
            RemoteShelves.install()
            let pool = try Pool.open(name: name, at: path)
            defer { pool.close() }
            try body(pool)
        }
    }
}

/// Prints a user's mistake or the world's refusal as one line and exits 1.
/// Every error of poolfs's own (PoolError, NetError, …) describes itself in
/// one line; ArgumentParser's clean exits pass through.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as any Error & CustomStringConvertible where !(error is CleanExit) {
        FileOutput.standardError.write("poolfs: \(error.description)\n")
        throw ExitCode(1)
    }
}

func parseSize(_ text: String) throws -> UInt64 {
    try ByteSize.parse(text)
}
