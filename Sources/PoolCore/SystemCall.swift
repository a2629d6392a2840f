import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The system calls the pool makes, in one place: swift-system's
/// FileDescriptor and Errno where it has the call, thin wrappers for what
/// it lacks (fallocate, hole punching, SEEK_DATA/SEEK_HOLE, mincore, the
/// OFD locks, the *at calls of PoolDirectory). Each retries EINTR and turns
/// an error into `PoolError.system` naming the call and the path.
enum SystemCall {
    static func message(_ code: Int32) -> String {
        Errno(rawValue: code).description
    }

    /// `body` on the descriptor, its Errno as `PoolError.system`.
    static func calling<R>(_ call: String, _ path: String, _ fd: Int32,
                                   _ body: (FileDescriptor) throws -> R) throws -> R {
        do {
            return try body(FileDescriptor(rawValue: fd))
        } catch let error as Errno {
            throw PoolError.system(call: call, path: path, errno: error.rawValue)
        }
    }

    @discardableResult
    static func retrying(_ call: String, _ path: String, _ body: () -> Int32) throws -> Int32 {
        while true {
            let result = body()
            if result != -1 { return result }
            if errno == EINTR { continue }
            throw PoolError.system(call: call, path: path, errno: errno)
        }
    }

    static func close(_ fd: Int32) {
        try? FileDescriptor(rawValue: fd).close()
    }

    static func fileSize(_ fd: Int32, path: String) throws -> UInt64 {
        try calling("fstat", path, fd) { UInt64(try $0.stat().size) }
    }

    static func truncate(_ fd: Int32, to size: UInt64, path: String) throws {
        try calling("ftruncate", path, fd) { try $0.resize(to: Int64(size)) }
    }

    /// Reserves file blocks so that a later store into the mapping cannot
    /// SIGBUS on a full tmpfs; ENOSPC becomes a pool-full error at the caller.
    static func allocate(_ fd: Int32, offset: UInt64, length: UInt64, path: String) throws {
        // tmpfs gives up with EINTR when a signal (a child's SIGCHLD) arrives.
        var result: Int32
        repeat { result = posix_fallocate(fd, off_t(offset), off_t(length)) } while result == EINTR
        if result != 0 { throw PoolError.system(call: "fallocate", path: path, errno: result) }
    }

    /// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): the blocks go
    /// back to the file system, the bytes read as zeros.
    static func punchHole(_ fd: Int32, offset: UInt64, length: UInt64, path: String) throws {
        _ = try retrying("fallocate", path) { CLinux_punch_hole(fd, off_t(offset), off_t(length)) }
    }

    /// Whether `[offset, offset+length)` of the file has a hole (SEEK_HOLE)
    /// or data (SEEK_DATA) in it.
    static func hasHole(_ fd: Int32, offset: UInt64, length: UInt64) -> Bool {
        let hole = lseek(fd, off_t(offset), CLinux_SEEK_HOLE)
        return hole < 0 || UInt64(hole) < offset + length
    }

    static func hasData(_ fd: Int32, offset: UInt64, length: UInt64) -> Bool {
        let data = lseek(fd, off_t(offset), CLinux_SEEK_DATA)
        return data >= 0 && UInt64(data) < offset + length
    }

    /// Bytes of the file in memory or on disk (st_blocks).
    static func allocatedBytes(_ fd: Int32) -> UInt64 {
        (try? FileDescriptor(rawValue: fd).stat().sizeAllocated).map { UInt64(max(0, $0)) } ?? 0
    }

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    /// `2026-12-05 18:20:01 UTC`, for messages.
    static func utc(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%d %H:%M:%S UTC", &parts)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// A small text file whole (a remote shelf's place).
    static func readText(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw PoolError.system(call: "open", path: path, errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw PoolError.system(call: "read", path: path, errno: errno) }
            if n == 0 { break }
            bytes += buffer[0..<n]
            guard bytes.count <= 1 << 20 else { throw PoolError.damaged(path: path, reason: "larger than 1 MiB") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            if isDirectory(prefix) { continue }
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw PoolError.system(call: "mkdir", path: prefix, errno: errno)
            }
        }
    }

    static func mapShared(_ fd: Int32, length: Int, path: String) throws -> UnsafeMutableRawPointer {
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let address, address != MAP_FAILED else {
            throw PoolError.system(call: "mmap", path: path, errno: errno)
        }
        return address
    }

    static func sync(_ address: UnsafeMutableRawPointer, length: Int) {
        _ = msync(address, length, MS_SYNC)
    }

}

/// Open-file-description locks on single bytes of a file. The kernel drops
/// them when the holder's file description closes, so a process killed with
/// SIGKILL can never leave one behind; two opens in one process are two
/// holders, unlike classic POSIX locks.
enum FileLock {
    private static let getLock = CLinux_F_OFD_GETLK
    private static let setLock = CLinux_F_OFD_SETLK
    private static let setLockWait = CLinux_F_OFD_SETLKW

    enum Kind { case shared, exclusive }

    private static func request(_ kind: Kind?, byte: UInt64) -> flock {
        var request = flock()
        switch kind {
        case .shared: request.l_type = Int16(F_RDLCK)
        case .exclusive: request.l_type = Int16(F_WRLCK)
        case nil: request.l_type = Int16(F_UNLCK)
        }
        request.l_whence = Int16(SEEK_SET)
        request.l_start = off_t(byte)
        request.l_len = 1
        return request
    }

    /// Takes the lock without waiting; false when another holder has it.
    static func tryLock(_ fd: Int32, byte: UInt64, _ kind: Kind) -> Bool {
        var lock = request(kind, byte: byte)
        while true {
            if fcntl(fd, setLock, &lock) == 0 { return true }
            if errno == EINTR { continue }
            precondition(errno == EAGAIN || errno == EACCES, "F_OFD_SETLK: \(SystemCall.message(errno))")
            return false
        }
    }

    /// Waits for the lock.
    static func lock(_ fd: Int32, byte: UInt64, _ kind: Kind) {
        var lock = request(kind, byte: byte)
        while fcntl(fd, setLockWait, &lock) != 0 {
            precondition(errno == EINTR, "F_OFD_SETLKW: \(SystemCall.message(errno))")
        }
    }

    static func unlock(_ fd: Int32, byte: UInt64) {
        var lock = request(nil, byte: byte)
        _ = fcntl(fd, setLock, &lock)
    }

    /// True when some other file description holds a lock on the byte.
    static func isHeld(_ fd: Int32, byte: UInt64) -> Bool {
        var lock = request(.exclusive, byte: byte)
        guard fcntl(fd, getLock, &lock) == 0 else { return false }
        return lock.l_type != Int16(F_UNLCK)
    }
}
