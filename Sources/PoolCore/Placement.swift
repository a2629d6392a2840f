#if canImport(Glibc)
import Glibc
#endif

/// NUMA nodes as numactl writes them: `0-3,5`.
public struct NodeSet: Hashable, Sendable, CustomStringConvertible, ExpressibleByArrayLiteral {
    public let nodes: [Int]

    public init(_ nodes: [Int]) { self.nodes = Array(Set(nodes)).sorted() }
    public init(arrayLiteral nodes: Int...) { self.init(nodes) }

    public init(parsing text: String) throws {
        var nodes: [Int] = []
        guard !text.isEmpty else { throw PoolError.invalidPlacement(text, reason: "the node list is empty") }
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds.last!),
                  low >= 0, low <= high, high < 4096
            else { throw PoolError.invalidPlacement(text, reason: "'\(part)' is not a node or a range like 0-3") }
            nodes += Array(low...high)
        }
        self.init(nodes)
    }

    /// Ranges where they save room: `0-3,5`.
    public var description: String {
        var parts: [String] = []
        var i = 0
        while i < nodes.count {
            var j = i
            while j + 1 < nodes.count && nodes[j + 1] == nodes[j] + 1 { j += 1 }
            parts.append(j > i ? "\(nodes[i])-\(nodes[j])" : "\(nodes[i])")
            i = j + 1
        }
        return parts.joined(separator: ",")
    }

    /// The nodes this machine has, from sysfs (`0` where sysfs says nothing).
    public static var online: NodeSet {
        reading("/sys/devices/system/node/online") ?? [0]
    }

    /// A list in this form read from a sysfs file (CPU lists share it).
    public static func reading(_ path: String) -> NodeSet? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = read(fd, &buffer, buffer.count)
        return try? NodeSet(parsing: String(decoding: buffer[0..<max(n, 0)], as: UTF8.self).trimmingWhitespace())
    }
}

/// Where a heap's or region's pages live (hmalloc/memkind, through mbind).
public enum Placement: Hashable, Sendable, CustomStringConvertible {
    case local
    case bind(NodeSet)
    case preferred(Int)
    case preferredMany(NodeSet)
    case interleave(NodeSet)
    case weightedInterleave(NodeSet)
    /// On a remote shelf (that one, or any): pages on a memory node.
    case remote(Int?)

    static let modes = ["local", "bind", "preferred", "preferred-many", "interleave", "weighted-interleave", "remote"]

    /// Placed by mbind among this machine's nodes (not `remote`).
    var isNUMA: Bool {
        if case .remote = self { return false }
        return true
    }

    /// `local`, `bind 0-3,5`, `preferred 1`, `preferred-many 0,1`,
    /// `interleave 0-3`, `weighted-interleave 0,1` (a `=` or `:` may stand
    /// for the space). Nodes are checked against this machine's.
    public init(parsing text: String) throws {
        try self.init(text, checkingMachine: true)
    }

    /// Reads a placement written by `description`, without checking the
    /// nodes against this machine (the pool may have moved since); nil for
    /// empty or unreadable text.
    init?(stored text: String) {
        // The common case (no placement set) without parsing or an error.
        guard !text.allSatisfy({ $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\0" }) else { return nil }
        guard let placement = try? Placement(text, checkingMachine: false) else { return nil }
        self = placement
    }

    private init(_ text: String, checkingMachine: Bool) throws {
        let trimmed = text.trimmingWhitespace()
        let separator = trimmed.firstIndex { $0 == " " || $0 == "=" || $0 == ":" }
        let mode = String(trimmed[..<(separator ?? trimmed.endIndex)]).lowercased()
        let rest = separator.map { String(trimmed[trimmed.index(after: $0)...]).trimmingWhitespace() } ?? ""
        func nodes() throws -> NodeSet {
            let set = try NodeSet(parsing: rest)
            guard checkingMachine else { return set }
            let online = NodeSet.online
            let missing = set.nodes.filter { !online.nodes.contains($0) }
            guard missing.isEmpty else {
                throw PoolError.invalidPlacement(trimmed, reason: "this machine has no node \(NodeSet(missing)) (its nodes: \(online))")
            }
            return set
        }
        switch mode {
        case "local", "default":
            guard rest.isEmpty else { throw PoolError.invalidPlacement(trimmed, reason: "local takes no nodes") }
            self = .local
        case "bind", "membind": self = .bind(try nodes())
        case "preferred":
            let set = try nodes()
            guard set.nodes.count == 1 else {
                throw PoolError.invalidPlacement(trimmed, reason: "preferred takes one node (use preferred-many)")
            }
            self = .preferred(set.nodes[0])
        case "preferred-many": self = .preferredMany(try nodes())
        case "interleave": self = .interleave(try nodes())
        case "remote":
            guard !rest.isEmpty else { self = .remote(nil); return }
            guard let shelf = Int(rest), shelf >= 0, shelf < Layout.ShelfTable.capacity else {
                throw PoolError.invalidPlacement(trimmed, reason: "remote takes a shelf number, or nothing for any remote shelf")
            }
            self = .remote(shelf)
        case "weighted-interleave":
            guard !checkingMachine || SystemCall.exists("/sys/kernel/mm/mempolicy/weighted_interleave") else {
                throw PoolError.invalidPlacement(trimmed, reason: "this kernel has no weighted interleave (it needs Linux 6.9)")
            }
            self = .weightedInterleave(try nodes())
        default:
            throw PoolError.invalidPlacement(trimmed, reason: "unknown mode '\(mode)' (use \(Placement.modes.joined(separator: ", ")))")
        }
    }

    public var description: String {
        switch self {
        case .local: "local"
        case .bind(let nodes): "bind \(nodes)"
        case .preferred(let node): "preferred \(node)"
        case .preferredMany(let nodes): "preferred-many \(nodes)"
        case .interleave(let nodes): "interleave \(nodes)"
        case .weightedInterleave(let nodes): "weighted-interleave \(nodes)"
        case .remote(let shelf): shelf.map { "remote \($0)" } ?? "remote"
        }
    }

    /// The kernel's MPOL_* mode (numaif.h has no name for weighted interleave).
    var mode: Int32 {
        switch self {
        case .local: 4
        case .preferred: 1
        case .bind: 2
        case .interleave: 3
        case .preferredMany: 5
        case .weightedInterleave: 6
        case .remote: 4
        }
    }

    var nodes: NodeSet {
        switch self {
        case .local, .remote: []
        case .preferred(let node): [node]
        case .bind(let n), .preferredMany(let n), .interleave(let n), .weightedInterleave(let n): n
        }
    }
}
