import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// A directory of its own for one test's pools, removed (pools and all) at
/// the end even when the test fails.
public final class Scratch {
    public let path: String

    public init() {
        var template = Array("/dev/shm/poolfs-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { Scratch.removeTree(path) }

    public static func removeTree(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in names(in: path) { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    public func file(_ pool: String, _ name: String) -> String { "\(path)/\(pool)/\(name)" }
}

/// The names in directory `path`, but `.` and `..`.
public func names(in path: String) -> [String] {
    guard let stream = opendir(path) else { return [] }
    defer { closedir(stream) }
    var names: [String] = []
    while let entry = readdir(stream) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}
