import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Run the benchmarks behind BENCHMARKS.md (use a release build).",
        discussion: """
            Runs poolfs-bench, built beside poolfs, which links the peers (glibc, pmemobj) and
            preloads jemalloc, mimalloc and tcmalloc into worker processes of their own.
            """)

    @Argument(help: "The benchmark: pages (page allocation), heap (small objects) or remote (a memory node on loopback, against Redis and ucx_perftest).")
    var benchmark: String

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 1

    func run() throws {
        let executable = BenchCommand.besideSelf("poolfs-bench")
        guard access(executable, X_OK) == 0 else {
            FileOutput.standardError.write("poolfs: \(executable) is missing; build it with `swift build -c release`\n")
            throw ExitCode(1)
        }
        var arguments = [executable, benchmark, "--seconds", String(seconds)]
        if json { arguments.append("--json") }
        let cArguments = arguments.map { strdup($0) } + [nil]
        execv(executable, cArguments)
        FileOutput.standardError.write("poolfs: cannot run \(executable): \(String(cString: strerror(errno)))\n")
        throw ExitCode(1)
    }

    static func besideSelf(_ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return name }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)]) + "/" + name
    }
}
