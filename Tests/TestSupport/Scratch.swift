import Foundation
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
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] { removeTree(path + "/" + name) }
            rmdir(path)
        } else {
            unlink(path)
        }
    }

    public func file(_ pool: String, _ name: String) -> String { "\(path)/\(pool)/\(name)" }
}
