import ArgumentParser
import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// hmctl for poolfs: runs a program that uses the C API (pm_malloc …) with
/// its default heap, and that heap's placement, chosen from outside; or
/// (`--direct`) with libpoolfs-direct.so, so that it reads and writes the
/// mount's files straight from pool memory.
struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a program whose pm_malloc calls use HEAP, placed by POLICY, or with direct access to the mount's files.",
        discussion: """
            With --direct, PROGRAM runs with libpoolfs-direct.so preloaded: its reads and writes of
            files on a poolfs mount copy straight from and to pool memory, past the FUSE round
            trip; opens, the namespace and permissions still go through the mount.
            POOLFS_DIRECT=0 turns it off again. Example: poolfs exec --direct -- fio job.fio

            Otherwise sets POOLFS_POOL, POOLFS_PATH, POOLFS_HEAP and POOLFS_POLICY for PROGRAM, which
            libpoolcore.so reads; the placement applies to that program's allocations only.
            Example: poolfs exec --heap fast --policy 'bind 1' -- ./app --input data
            """)

    @Flag(help: "Preload libpoolfs-direct.so: files on poolfs mounts are read and written straight from pool memory.")
    var direct = false
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
            if direct {
                try preloadDirectAccess()
                execvp(executable, program.map { strdup($0) } + [nil])
                throw PoolError.system(call: "exec", path: executable, errno: errno)
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

    /// LD_PRELOAD gains libpoolfs-direct.so, which lies beside this program.
    private func preloadDirectAccess() throws {
        var executable = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &executable, Int(PATH_MAX))
        guard length > 0 else { throw PoolError.system(call: "readlink", path: "/proc/self/exe", errno: errno) }
        let directory = String(decoding: executable[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let library = "\(directory)/libpoolfs-direct.so"
        guard access(library, R_OK) == 0 else {
            throw ValidationError("\(library) is missing: scripts/run (or scripts/test) builds it beside poolfs")
        }
        let preload = getenv("LD_PRELOAD").map { String(cString: $0) } ?? ""
        setenv("LD_PRELOAD", preload.isEmpty ? library : "\(library) \(preload)", 1)
    }
}
