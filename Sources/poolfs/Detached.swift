#if canImport(Glibc)
import Glibc
#endif

/// Going to the background the way `poolfs mount` does: the parent waits
/// until the child is ready (or failed) and exits with its answer, so a
/// script that ran the command knows it is listening when it returns.
struct Detached {
    private let pipe: Int32
    /// The first byte of a ready child's report (ASCII ACK); errors never start with it.
    private static let readyMark: UInt8 = 6

    /// Forks. The parent never returns: it prints what the child reports
    /// and exits 0 once it is ready, 1 if it ended first. The child returns,
    /// in a session of its own, its errors going to the parent until ready.
    static func start() throws -> Detached {
        var ends: [Int32] = [0, 0]
        guard Glibc.pipe(&ends) == 0 else { throw DetachError(reason: String(cString: strerror(errno))) }
        let child = fork()
        guard child >= 0 else { throw DetachError(reason: String(cString: strerror(errno))) }
        if child > 0 {
            close(ends[1])
            let report = FileOutput.readAll(descriptor: ends[0])
            let isReady = report.first == Self.readyMark
            FileOutput(descriptor: isReady ? 1 : 2).write(String(decoding: report.dropFirst(isReady ? 1 : 0), as: UTF8.self))
            exit(isReady ? 0 : 1)
        }
        close(ends[0])
        setsid()
        dup2(ends[1], 2)
        return Detached(pipe: ends[1])
    }

    /// Hands `announcement` to the parent, which then exits 0, and leaves
    /// the terminal.
    func ready(_ announcement: String) {
        FileOutput(descriptor: pipe).write(String(UnicodeScalar(Self.readyMark)) + announcement)
        let null = open("/dev/null", O_RDWR)
        for fd: Int32 in [0, 1, 2] { dup2(null, fd) }
        close(null)
        close(pipe)
    }
}

struct DetachError: Error, CustomStringConvertible {
    let reason: String
    var description: String { "cannot go to the background: \(reason)" }
}
