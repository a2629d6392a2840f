import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How the kernel treats each open file: through its page cache, or
/// direct (FUSE's direct_io: reads and writes go to the pool in one
/// request each, up to max_write), and whether pages it cached earlier are
/// still good (keep_cache). The file system counts opens for its own ends
/// (an unlinked file lives until its last close); this counts them for
/// the kernel's cache.
///
/// Once the kernel keeps shared mappings coherent with direct I/O
/// (FUSE_DIRECT_IO_ALLOW_MMAP), every file is opened direct: its bytes are
/// not held a second time in the page cache, and a copy is saved on each
/// access. Without, a file opened only for writing, by nobody else, is
/// written direct (the page cache would add a copy); while such a writer
/// is open, other opens are direct too (a cached reader would miss its
/// writes), and afterwards the cache is dropped once.
final class CachePolicy: Sendable {
    struct Open {
        let direct: Bool
        let keepCache: Bool
    }

    /// Set once the kernel has agreed to keep shared mappings coherent.
    let sharedMappingsCoherent = Atomic<Bool>(false)

    private struct File {
        var opens = 0
        /// Of those, opens whose I/O bypasses the kernel's page cache.
        var directOpens = 0
        /// Written past the page cache since the cache last saw the file.
        var cacheStale = false
    }

    /// Files open now, and closed ones whose cache went stale meanwhile.
    private let files = Mutex<[UInt64: File]>([:])

    /// An open of `inode` (of file type `mode`).
    func opened(_ inode: UInt64, mode: UInt32, writeOnly: Bool) -> Open {
        let regular = mode & S_IFMT == S_IFREG
        return files.withLock { files in
            var file = files[inode] ?? File()
            defer { files[inode] = file }
            file.opens += 1
            if regular && sharedMappingsCoherent.load(ordering: .relaxed) {
                // The page cache holds only mapped pages, kept coherent by
                // the kernel: dropping them would unmap others' mappings.
                file.directOpens += 1
                return Open(direct: true, keepCache: true)
            }
            if regular && (file.directOpens > 0 || (writeOnly && file.opens == 1)) {
                file.directOpens += 1
                file.cacheStale = true
                return Open(direct: true, keepCache: false)
            }
            let keep = !file.cacheStale
            file.cacheStale = false
            return Open(direct: false, keepCache: keep)
        }
    }

    /// A close of one of `inode`'s opens.
    func released(_ inode: UInt64, direct: Bool) {
        files.withLock { files in
            guard var file = files[inode] else { return }
            file.opens -= 1
            if direct { file.directOpens -= 1 }
            files[inode] = file.opens > 0 || file.cacheStale ? file : nil
        }
    }
}
