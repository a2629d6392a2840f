import ArgumentParser
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// hmctl for poolfs: runs a program that uses the C API (pm_malloc …) with
/// its default heap, and that heap's placement, chosen from outside.
struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a program whose pm_malloc calls use HEAP, placed by POLICY, in this run only.",
        discussion: """
            Sets POOLFS_POOL, POOLFS_PATH, POOLFS_HEAP and POOLFS_POLICY for PROGRAM, which
            libpoolcore.so reads; the placement applies to that program's allocations only.
            Example: poolfs exec --heap fast --policy 'bind 1' -- ./app --input data
            """)

    @Option(help: "The pool.") var pool = "default"
    @Option(help: "Keep the pool at DIR/NAME instead of \(Pool.defaultHome)/NAME.") var path: String?
    @Option(help: "The heap the program's pm_* calls use (created if missing).") var heap = "default"
    @Option(help: "Where those allocations go: local, bind NODES, preferred NODE, preferred-many NODES, interleave NODES, weighted-interleave NODES.")
    var policy: String?
    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments, after --.")
    var command: [String] = []

    func run() throws {
        try reportingErrors {
            // The passthrough argument takes --help too, when no -- comes first.
            if let first = command.first, first == "--help" || first == "-h" {
                print(PoolfsCommand.helpMessage(for: ExecCommand.self))
                return
            }
            let program = command.first == "--" ? Array(command.dropFirst()) : command
            guard let executable = program.first else {
                throw ValidationError("no program to run: poolfs exec … -- PROGRAM ARGS")
            }
            let placement = try policy.map(Placement.init(parsing:))
            try Names.check(heap, what: "heap")
            // Fail here, in one line, rather than inside the program.
            _ = try Pool.open(name: pool, at: path)
            setenv("POOLFS_POOL", pool, 1)
            setenv("POOLFS_HEAP", heap, 1)
            if let path { setenv("POOLFS_PATH", path, 1) } else { unsetenv("POOLFS_PATH") }
            if let placement { setenv("POOLFS_POLICY", placement.description, 1) } else { unsetenv("POOLFS_POLICY") }
            let arguments = program.map { strdup($0) } + [nil]
            execvp(executable, arguments)
            throw PoolError.system(call: "exec", path: executable, errno: errno)
        }
    }
}
