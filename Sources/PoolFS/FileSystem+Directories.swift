#if canImport(Glibc)
import Glibc
#endif

/// Listing a directory. Offsets: 1 after ".", 2 after "..", 3 after the
/// caller's `extra` entry (the root's ".pool"), and slot + 4 after the
/// entry in `slot`: stable while entries come and go. Without `attributes`
/// (plain readdir) each entry's stat holds just its inode and type.
extension FileSystem {
    public func listDirectory(_ number: UInt64, from offset: Int64, extra: (name: FileName, attributes: stat)? = nil,
                              attributes wanted: Bool = true, _ visit: (FileName, stat, Int64) -> Bool) throws {
        try tree.reading {
            let directory = try directory(number)
            // Under their locks: an atime moves under an inode's lock alone.
            if offset < 1, !visit(".", directory.lock.reading { attributes(directory) }, 1) { return }
            if offset < 2 {
                let parent = inodes[directory.record.parent] ?? directory
                if !visit("..", parent.lock.reading { attributes(parent) }, 2) { return }
            }
            if offset < 3, let extra, !visit(extra.name, extra.attributes, 3) { return }
            for (entry, next) in directory.directory!.entries(from: Int(max(offset, 3) - 3)) {
                guard let child = inodes[entry.inode] else { continue }
                var attributes = stat()
                if wanted {
                    attributes = child.lock.reading { self.attributes(child) }
                } else {
                    attributes.st_ino = UInt(child.number)
                    attributes.st_mode = child.record.mode
                }
                if !visit(entry.name, attributes, Int64(next) + 3) { return }
            }
        }
    }
}
