#if canImport(Glibc)
import Glibc
#endif

extension PoolError {
    /// The one errno for each error, as the C API returns it and the mount
    /// and its control tree answer it: a full pool is ENOSPC everywhere, as
    /// a full file system is.
    public var errno: Int32 {
        switch self {
        case .invalidName, .invalidSize, .invalidPageSize, .invalidAddress, .invalidFree, .invalidPlacement,
             .invalidMedium: EINVAL
        case .poolExists, .regionExists, .heapExists, .destinationTaken: EEXIST
        case .poolNotFound, .regionNotFound, .heapNotFound: ENOENT
        case .notEnoughSpace, .poolFull, .tooManyShelves, .tooManyRegions, .tooManyProcesses, .tooManyHeaps: ENOSPC
        case .damaged, .remoteShelf: EIO
        case .newerVersion: ENOTSUP
        case .inUse, .heapInUse, .heldExclusively, .cannotFreeze: EBUSY
        case .tooManyShares: EMLINK
        case .closed: EBADF
        case .refusedDirectory: EACCES
        case .system(_, _, let code): code
        }
    }
}
