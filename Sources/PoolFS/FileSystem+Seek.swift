#if canImport(Glibc)
import Glibc
#endif

/// lseek's SEEK_DATA and SEEK_HOLE, answered from the file's runs, so that
/// `cp --sparse`, tar and backup tools skip a sparse file's holes rather
/// than reading their zeros.
extension FileSystem {
    /// The first offset at or after `offset` where data (or a hole) starts;
    /// the end of the file is a hole. ENXIO at or past the end, or where no
    /// data follows.
    public func seek(_ number: UInt64, from offset: UInt64, data: Bool) throws -> UInt64 {
        try tree.reading {
            let inode = try inode(number)
            return try inode.lock.reading {
                let size = inode.record.size
                guard offset < size else { throw FileSystemError(ENXIO) }
                guard data else { return min(inode.extents.holeStart(from: offset, pageShift: pageShift), size) }
                // Pages taken ahead lie past the size: no data there.
                guard let start = inode.extents.dataStart(from: offset, pageShift: pageShift), start < size else {
                    throw FileSystemError(ENXIO)
                }
                return start
            }
        }
    }
}
