import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Owners and modes (a RegionAccess each, as a region's) given to `.pool/`
/// and its fixed entries by chmod and chown: kept as a hidden xattr of the root, so that they are logged and
/// outlive the mount as any directory's would.
extension FileSystem {
    static let controlAccessAttribute: FileName = "trusted.poolfs.control"

    /// Names of the file system's own, hidden xattrs.
    static func isHiddenXattr(_ name: FileName) -> Bool { name.hasPrefix("trusted.poolfs.") }

    /// By control-tree inode; entries never changed are absent.
    public func controlAccess() -> [UInt64: RegionAccess] {
        tree.reading {
            guard let value = inodes[FileSystem.rootInode]?.xattrs[FileSystem.controlAccessAttribute] else { return [:] }
            return FileSystem.decodeControlAccess(value)
        }
    }

    public func setControlAccess(_ inode: UInt64, _ access: RegionAccess) throws {
        try tree.writing {
            let root = try self.inode(FileSystem.rootInode)
            var table = root.xattrs[FileSystem.controlAccessAttribute].map(FileSystem.decodeControlAccess) ?? [:]
            table[inode] = access
            let text = table.keys.sorted().map { key in
                let a = table[key]!
                return "\(key) \(String(a.mode & 0o7777, radix: 8)) \(a.uid) \(a.gid)\n"
            }.joined()
            try commit(.setXattr(inode: FileSystem.rootInode, name: FileSystem.controlAccessAttribute,
                                 value: Array(text.utf8), time: .now()))
        }
    }

    /// Lines of "inode mode(octal) uid gid"; a line that is not one is skipped.
    static func decodeControlAccess(_ value: [UInt8]) -> [UInt64: RegionAccess] {
        var table: [UInt64: RegionAccess] = [:]
        for line in String(decoding: value, as: UTF8.self).split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count == 4, let inode = UInt64(fields[0]), let mode = UInt32(fields[1], radix: 8), mode <= 0o7777,
                  let uid = UInt32(fields[2]), let gid = UInt32(fields[3]) else { continue }
            table[inode] = RegionAccess(uid: uid, gid: gid, mode: mode)
        }
        return table
    }
}
