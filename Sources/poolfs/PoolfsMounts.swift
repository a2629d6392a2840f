import Foundation
import PoolCore

enum PoolfsMounts {
    /// Where the pool is mounted: a poolfs mount of that name whose
    /// `.pool/info` shows this pool's shelf files.
    static func mountpoint(of pool: Pool) -> String? {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2, fields[0] == "poolfs:\(pool.name)", fields[2] == "fuse.poolfs" else { continue }
            // /proc/mounts writes a space in a path as \040.
            let path = fields[1].replacingOccurrences(of: "\\040", with: " ")
            if let info = try? String(contentsOfFile: "\(path)/.pool/info", encoding: .utf8), info.contains(pool.path + "/") {
                return path
            }
        }
        return nil
    }
}
