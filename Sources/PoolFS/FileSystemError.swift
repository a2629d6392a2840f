import PoolCore
#if canImport(Glibc)
import Glibc
#endif

/// Why a file system operation was refused, as the errno the caller gets.
public struct FileSystemError: Error, Equatable, CustomStringConvertible {
    public let code: Int32

    public init(_ code: Int32) { self.code = code }

    public static let notFound = FileSystemError(ENOENT)
    public static let exists = FileSystemError(EEXIST)
    public static let notDirectory = FileSystemError(ENOTDIR)
    public static let isDirectory = FileSystemError(EISDIR)
    public static let notEmpty = FileSystemError(ENOTEMPTY)
    public static let invalid = FileSystemError(EINVAL)
    public static let noSpace = FileSystemError(ENOSPC)
    public static let tooBig = FileSystemError(EFBIG)
    public static let nameTooLong = FileSystemError(ENAMETOOLONG)
    public static let notPermitted = FileSystemError(EPERM)
    public static let noAttribute = FileSystemError(ENODATA)
    public static let notSupported = FileSystemError(EOPNOTSUPP)
    public static let range = FileSystemError(ERANGE)
    public static let io = FileSystemError(EIO)
    public static let tooManyLinks = FileSystemError(EMLINK)
    public static let noIoctl = FileSystemError(ENOTTY)
    /// A snapshot while a program maps a file writable with direct access.
    public static let busy = FileSystemError(EBUSY)
    /// A snapshot's files (FileSystem+Snapshots.swift).
    public static let readOnly = FileSystemError(EROFS)

    public var description: String { String(cString: strerror(code)) }

    /// What a failed step of a change answers: its own errno, EIO where a
    /// remote shelf's node did not answer, else `otherwise`.
    static func answering(_ error: Error, otherwise: FileSystemError) -> FileSystemError {
        if let error = error as? FileSystemError { return error }
        if case PoolError.remoteShelf? = error as? PoolError { return .io }
        return otherwise
    }
}
