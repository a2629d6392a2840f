import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// This thread's last error as a C string, and its code (PoolError.errno).
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
        (error as? PoolError)?.errno ?? EIO
    }
}
