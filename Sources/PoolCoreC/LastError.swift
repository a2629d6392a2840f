import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// This thread's last error as a C string, and the errno-style code of each
/// PoolError.
enum LastError {
    nonisolated(unsafe) private static var key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static var message: UnsafePointer<CChar>? {
        pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
    }

    static func record(_ error: any Error) -> Int32 {
        free(pthread_getspecific(key))
        pthread_setspecific(key, strdup("\(error)"))
        return code(of: error)
    }

    static func code(of error: any Error) -> Int32 {
        guard let error = error as? PoolError else { return EIO }
        switch error {
        case .invalidName, .invalidSize, .invalidPageSize, .invalidAddress, .invalidFree, .invalidPlacement,
             .invalidMountOptions: return EINVAL
        case .poolExists, .regionExists, .heapExists, .destinationTaken: return EEXIST
        case .poolNotFound, .regionNotFound, .heapNotFound: return ENOENT
        case .notEnoughSpace, .poolFull: return ENOMEM
        case .damaged: return EIO
        case .newerVersion: return ENOTSUP
        case .inUse, .heapInUse, .mounted: return EBUSY
        case .tooManyShelves, .tooManyRegions, .tooManyProcesses, .tooManyHeaps: return ENOSPC
        case .closed: return EBADF
        case .system(_, _, let code): return code
        }
    }
}
