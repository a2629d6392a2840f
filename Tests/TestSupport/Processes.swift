import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Executables built beside the test bundle.
public func builtExecutable(_ name: String) -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var directory = String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    // The bundle may sit inside a .xctest directory on some layouts.
    while !directory.isEmpty && access(directory + "/" + name, X_OK) != 0 && directory.contains(".xctest") {
        directory = String(directory[..<(directory.lastIndex(of: "/") ?? directory.startIndex)])
    }
    return directory + "/" + name
}

/// A child process with pipes on stdin and stdout, read a line at a time.
/// Killed and reaped when dropped, so no test leaves one behind.
public final class Child {
    public let pid: pid_t
    private let input: Int32
    private let output: Int32
    private var buffer: [UInt8] = []
    private var reaped = false

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        // A child that died must fail the test's write to it, not kill the runner.
        signal(SIGPIPE, SIG_IGN)
        var toChild: [Int32] = [0, 0]
        var fromChild: [Int32] = [0, 0]
        precondition(pipe(&toChild) == 0 && pipe(&fromChild) == 0)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, toChild[0], 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 1)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 2)
        for fd in toChild + fromChild { posix_spawn_file_actions_addclose(&actions, fd) }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var inherited: [String] = []
        var entry = environ
        while let pointer = entry.pointee {
            let line = String(cString: pointer)
            if !environment.keys.contains(where: { line.hasPrefix($0 + "=") }) { inherited.append(line) }
            entry += 1
        }
        let envp = (inherited + environment.map { "\($0.key)=\($0.value)" }).map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        // Children start with no signal blocked and default handlers, not
        // with whatever the test runner's thread had.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var child: pid_t = 0
        let result = posix_spawnp(&child, executable, &actions, &attributes, argv, envp)
        close(toChild[0])
        close(fromChild[1])
        guard result == 0 else {
            close(toChild[1]); close(fromChild[0])
            throw PoolError.system(call: "posix_spawn", path: executable, errno: result)
        }
        pid = child
        input = toChild[1]
        output = fromChild[0]
    }

    deinit {
        if !reaped {
            kill(pid, SIGKILL)
            _ = wait()
        }
        close(input)
        close(output)
    }

    /// The next line the child prints, or nil at end of output.
    public func readLine() -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 10) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = read(output, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                if buffer.isEmpty { return nil }
                defer { buffer.removeAll() }
                return String(decoding: buffer, as: UTF8.self)
            }
            buffer += chunk[..<n]
        }
    }

    /// Sends a command and returns the child's one-line answer.
    @discardableResult
    public func ask(_ line: String) -> String {
        send(line)
        return readLine() ?? "<no answer>"
    }

    /// Sends a line, and reads nothing.
    public func send(_ line: String) {
        let text = line + "\n"
        _ = text.withCString { write(input, $0, strlen($0)) }
    }

    /// Reads lines until one starts with `prefix`; all lines read, in order.
    @discardableResult
    public func waitFor(_ prefix: String) -> [String] {
        var lines: [String] = []
        while let line = readLine() {
            lines.append(line)
            if line.hasPrefix(prefix) { break }
        }
        return lines
    }

    public func kill9() {
        kill(pid, SIGKILL)
    }

    /// Waits for the child; its exit status, or 128+signal.
    @discardableResult
    public func wait() -> Int32 {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        reaped = true
        let signal = status & 0x7f
        exitStatus = signal == 0 ? (status >> 8) & 0xff : 128 + signal
        return exitStatus!
    }
    private var exitStatus: Int32?
}

/// Runs a command to completion; its exit status and its output.
public func run(_ executable: String, _ arguments: [String],
         environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let child = try Child(executable, arguments, environment: environment)
    var lines: [String] = []
    while let line = child.readLine() { lines.append(line) }
    return (child.wait(), lines.joined(separator: "\n"))
}
