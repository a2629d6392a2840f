/// Every failure a user can cause or meet, each with a one-line message that
/// names the thing and the cause. Our own bugs are preconditions, not errors.
public enum PoolError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidName(String, reason: String)
    case invalidMedium(String)
    case invalidSize(String, reason: String)
    case invalidPageSize(String, reason: String)
    case poolExists(name: String, path: String)
    case poolNotFound(name: String, path: String)
    case notEnoughSpace(path: String, needed: UInt64, available: UInt64)
    case damaged(path: String, reason: String)
    case newerVersion(path: String, found: UInt32, supported: UInt32)
    case inUse(name: String, pids: [Int32])
    case poolFull(name: String, pages: Int)
    case tooManyShelves(name: String, limit: Int)
    case invalidAddress(GlobalAddress, reason: String)
    case invalidFree(GlobalAddress, reason: String)
    case regionExists(String)
    case regionNotFound(String)
    case tooManyRegions(limit: Int)
    case tooManyProcesses(name: String, limit: Int)
    case heapExists(String)
    case heapNotFound(String)
    case heapInUse(String, reason: String)
    case tooManyHeaps(limit: Int)
    case destinationTaken(GlobalAddress)
    case tooManyShares(GlobalAddress, limit: Int)
    case invalidPlacement(String, reason: String)
    case heldExclusively(name: String, use: String, pid: Int32)
    case closed(name: String)
    case refusedDirectory(path: String, reason: String)
    case system(call: String, path: String, errno: Int32)
    /// A remote shelf's node did not answer, or refused (PoolNet's message).
    case remoteShelf(Int, node: String, reason: String)
    case cannotFreeze(name: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidName(name, reason):
            return "invalid name '\(name)': \(reason)"
        case let .invalidMedium(text):
            return "invalid medium '\(text)': a medium is dram or pmem (remote shelves come from `poolfs grow --remote`)"
        case let .invalidSize(text, reason):
            return "invalid size '\(text)': \(reason)"
        case let .invalidPageSize(text, reason):
            return "invalid page size '\(text)': \(reason)"
        case let .poolExists(name, path):
            return "pool '\(name)' already exists at \(path)"
        case let .poolNotFound(name, path):
            return "pool '\(name)' does not exist (no \(path))"
        case let .notEnoughSpace(path, needed, available):
            return "not enough space in \(path): the pool needs \(ByteSize.format(needed)), "
                + "the file system has \(ByteSize.format(available)) free"
        case let .damaged(path, reason):
            return "\(path) is damaged: \(reason); nothing was changed"
        case let .newerVersion(path, found, supported):
            return "\(path) has pool format version \(found), newer than this poolfs "
                + "supports (\(supported)); upgrade poolfs"
        case let .inUse(name, pids):
            let who = pids.isEmpty ? "another process" : "pid " + pids.map(String.init).joined(separator: ", ")
            return "pool '\(name)' is in use by \(who)"
        case let .poolFull(name, pages):
            return "pool '\(name)' is full: no run of \(pages) free page\(pages == 1 ? "" : "s") left "
                + "(grow it with `poolfs grow \(name) --by SIZE`)"
        case let .tooManyShelves(name, limit):
            return "pool '\(name)' already has the maximum of \(limit) shelves"
        case let .invalidAddress(address, reason):
            return "invalid global address \(address): \(reason)"
        case let .invalidFree(address, reason):
            return "cannot free \(address): \(reason)"
        case let .regionExists(name):
            return "region '\(name)' already exists"
        case let .regionNotFound(name):
            return "region '\(name)' does not exist"
        case let .tooManyRegions(limit):
            return "the pool already has the maximum of \(limit) regions"
        case let .tooManyProcesses(name, limit):
            return "pool '\(name)' is already open in \(limit) processes, the most it allows"
        case let .heapExists(name):
            return "heap '\(name)' already exists"
        case let .heapNotFound(name):
            return "heap '\(name)' does not exist"
        case let .heapInUse(name, reason):
            return "heap '\(name)' is in use: \(reason)"
        case let .tooManyHeaps(limit):
            return "the pool already has the maximum of \(limit) heaps"
        case let .tooManyShares(address, limit):
            return "cannot share the pages at \(address): they already have \(limit) owners, the most a page has"
        case let .destinationTaken(address):
            return "the word at \(address) already holds an address; publish only into a zero word"
        case let .invalidPlacement(text, reason):
            return "invalid placement '\(text)': \(reason)"
        case let .heldExclusively(name, use, pid):
            return "pool '\(name)' is already \(use) by pid \(pid)"
        case let .closed(name):
            return "pool '\(name)' is closed"
        case let .refusedDirectory(path, reason):
            return "refusing \(path): \(reason)"
        case let .system(call, path, errno):
            return "\(path): \(call) failed: \(SystemCall.message(errno))"
        case let .remoteShelf(shelf, node, reason):
            return "remote shelf \(shelf) (node \(node)): \(reason)"
        case let .cannotFreeze(name, reason):
            return "pool '\(name)' cannot be frozen: \(reason)"
        }
    }
}
