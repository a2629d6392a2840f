import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Extended attributes: stored ones (user.*, trusted.*, security.*), and
/// three that show where a file lives: `user.poolfs.heap` (settable on a
/// directory, for the files made in it, and on an empty file),
/// `user.poolfs.runs` and `user.poolfs.nodes` (read-only).
extension FileSystem {
    public static let heapAttribute: FileName = "user.poolfs.heap"
    public static let runsAttribute: FileName = "user.poolfs.runs"
    public static let nodesAttribute: FileName = "user.poolfs.nodes"
    static let maximumXattrValue = 64 << 10

    private func shown(_ inode: Inode) -> [FileName] {
        inode.isDirectory ? [FileSystem.heapAttribute]
            : inode.isRegular ? [FileSystem.heapAttribute, FileSystem.runsAttribute, FileSystem.nodesAttribute] : []
    }

    private func computed(_ name: FileName, _ inode: Inode) -> [UInt8]? {
        guard shown(inode).contains(name) else { return nil }
        switch name {
        case FileSystem.heapAttribute:
            return Array(heap(inode.record.heap).name.utf8)
        case FileSystem.runsAttribute:
            // shelf:offset+pages; a fragment's length in bytes (+4096B).
            let runs = inode.extents.extents.map {
                "\($0.address.shelf):0x\(String($0.address.offset, radix: 16))+" + ($0.isFragment ? "\($0.fragmentBytes)B" : "\($0.pages)")
            }
            return Array(runs.joined(separator: " ").utf8)
        default:
            // A fragment counts as the page it lies in.
            let runs = inode.extents.extents.map {
                TrackedRun(address: $0.isFragment ? pool.pageStart(containing: $0.address) ?? $0.address : $0.address,
                        pages: $0.pages, heap: inode.record.heap)
            }
            let counts = pool.pagesPerNode(of: runs).sorted { $0.key < $1.key }
            return Array(counts.map { "\($0.key):\($0.value)" }.joined(separator: " ").utf8)
        }
    }

    private static func checkNamespace(_ name: FileName) throws {
        guard !name.isEmpty, name.count <= 255 else { throw FileSystemError.range }
        guard ["user.", "trusted.", "security."].contains(where: { name.hasPrefix($0) }) else {
            throw FileSystemError.notSupported
        }
    }

    public func xattr(_ number: UInt64, name: FileName) throws -> [UInt8] {
        try tree.reading {
            let inode = try inode(number)
            return try inode.lock.reading {
                if let value = computed(name, inode) { return value }
                guard !FileSystem.isHiddenXattr(name), let value = inode.xattrs[name] else { throw FileSystemError.noAttribute }
                return value
            }
        }
    }

    public func xattrNames(_ number: UInt64) throws -> [FileName] {
        try tree.reading {
            let inode = try inode(number)
            return shown(inode) + inode.xattrs.keys.filter { !FileSystem.isHiddenXattr($0) }.sorted()
        }
    }

    /// `flags`: XATTR_CREATE (1) or XATTR_REPLACE (2).
    public func setXattr(_ number: UInt64, name: FileName, value: [UInt8], flags: Int32) throws {
        try FileSystem.checkNamespace(name)
        guard !FileSystem.isHiddenXattr(name) else { throw FileSystemError.notPermitted }
        guard value.count <= FileSystem.maximumXattrValue else { throw FileSystemError(E2BIG) }
        try tree.writing {
            let inode = try inode(number)
            // Only the heap of the computed ones can be set: the others are
            // refused without being computed (nodes asks the kernel page by page).
            if shown(inode).contains(name) {
                guard flags & 1 == 0 else { throw FileSystemError.exists }
                guard name == FileSystem.heapAttribute else { throw FileSystemError.notSupported }
                if computed(name, inode) == value { return }
                let heapName = String(decoding: value, as: UTF8.self)
                guard let heap = try? pool.openHeap(name: heapName) else { throw FileSystemError.invalid }
                // A file's pages stay where they are: only an empty file moves.
                guard inode.isDirectory || inode.extents.isEmpty else { throw FileSystemError.notSupported }
                try commit(.setHeap(inode: number, heap: heap.id, time: .now()))
                return
            }
            let exists = inode.xattrs[name] != nil
            if flags & 1 != 0, exists { throw FileSystemError.exists }
            if flags & 2 != 0, !exists { throw FileSystemError.noAttribute }
            try commit(.setXattr(inode: number, name: name, value: value, time: .now()))
        }
    }

    public func removeXattr(_ number: UInt64, name: FileName) throws {
        guard !FileSystem.isHiddenXattr(name) else { throw FileSystemError.noAttribute }
        return try tree.writing {
            let inode = try inode(number)
            if shown(inode).contains(name) { throw FileSystemError.notSupported }
            guard inode.xattrs[name] != nil else { throw FileSystemError.noAttribute }
            try commit(.removeXattr(inode: number, name: name, time: .now()))
        }
    }
}
