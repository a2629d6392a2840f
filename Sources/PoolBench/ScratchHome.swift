import Foundation
import PoolCore

/// A directory of its own in /dev/shm for a benchmark's pools and files,
/// removed with everything in it when dropped.
final class ScratchHome {
    let path: String
    init() throws {
        var template = Array("/dev/shm/poolfs-bench-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw PoolError.system(call: "mkdtemp", path: "/dev/shm", errno: errno)
        }
        path = String(cString: made)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
