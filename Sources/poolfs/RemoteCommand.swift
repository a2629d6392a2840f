import ArgumentParser
import PoolCore
import PoolNet
#if canImport(Glibc)
import Glibc
#endif

struct RemoteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remote",
        abstract: "Use a pool that a memory node serves, from the shell.",
        discussion: """
            The calls of RemotePool, for scripts and debugging. NODE is the node's HOST:PORT \
            (`poolfs serve --listen`); every call gives up after --deadline seconds.
            """,
        subcommands: [Info.self, Alloc.self, Free.self, Read.self, Write.self, CAS.self, Add.self, Region.self])

    struct Node: ParsableArguments {
        @Argument(help: ArgumentHelp("The memory node.", valueName: "HOST:PORT")) var node: String
        @Option(name: .customLong("key-file"), help: "The pool's key.") var keyFile: String
        @Option(help: "Seconds each call may take.") var deadline: Double = 2

        func withPool(_ body: (RemotePool) throws -> Void) throws {
            try reportingErrors {
                let pool = try RemotePool(connectingTo: NodeAddress(node), key: NodeKey.load(from: keyFile),
                                          deadlineSeconds: deadline)
                defer { pool.close() }
                try body(pool)
            }
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The served pool: name, UUID, page size, shelves.")
        @OptionGroup var node: Node

        func run() throws {
            try node.withPool { pool in
                print("pool '\(pool.poolName)' (\(pool.poolUUID)) at \(pool.node)")
                print("page size: \(ByteSize.format(UInt64(pool.pageSize)))")
                for shelf in try pool.shelves() {
                    print("shelf \(shelf.index): data pages from \(shelf.start), \(ByteSize.format(shelf.bytes))")
                }
            }
        }
    }

    struct Alloc: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Allocate a run of pages; prints its address.")
        @OptionGroup var node: Node
        @Option(help: "Pages in the run.") var count = 1

        func run() throws {
            try node.withPool { print(try $0.allocatePages(count: count)) }
        }
    }

    struct Free: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Free a run that alloc returned, with the same count.")
        @OptionGroup var node: Node
        @Argument(help: "The run's address, as alloc printed it.") var address: Address
        @Option(help: "Pages in the run.") var count = 1

        func run() throws {
            try node.withPool { try $0.freePages(at: address.value, count: count) }
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Copy COUNT bytes at ADDRESS to standard output.")
        @OptionGroup var node: Node
        @Argument var address: Address
        @Option(help: "How many bytes.") var count: Int

        func run() throws {
            try node.withPool { pool in
                guard count >= 0 else { throw NetError.invalidAddress(address.value, reason: "a count of \(count)") }
                let bytes = try pool.read(at: address.value, count: count)
                bytes.withUnsafeBytes { FileOutput(descriptor: 1).write($0) }
            }
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write standard input (or --text) at ADDRESS; returns once the node holds it.")
        @OptionGroup var node: Node
        @Argument var address: Address
        @Option(help: "The bytes to write, instead of standard input.") var text: String?

        func run() throws {
            try node.withPool { pool in
                let bytes = text.map { Array($0.utf8) } ?? FileOutput.readAll(descriptor: 0)
                try pool.write(at: address.value, bytes: bytes)
            }
        }
    }

    struct CAS: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cas",
            abstract: "Compare and swap the 8-byte word at ADDRESS; prints 'swapped' or 'kept', and the old value.")
        @OptionGroup var node: Node
        @Argument var address: Address
        @Argument var expected: UInt64
        @Argument var desired: UInt64

        func run() throws {
            try node.withPool { pool in
                let result = try pool.compareAndSwap(at: address.value, expected: expected, desired: desired)
                print("\(result.exchanged ? "swapped" : "kept") \(result.original)")
            }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add VALUE to the 8-byte word at ADDRESS; prints the value it held.")
        @OptionGroup var node: Node
        @Argument var address: Address
        @Argument var value: UInt64

        func run() throws {
            try node.withPool { print(try $0.fetchAndAdd(at: address.value, value)) }
        }
    }

    struct Region: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Open region NAME (or create it with --size, or free it with --destroy); prints its address and size.")
        @OptionGroup var node: Node
        @Argument var name: String
        @Option(help: "Create the region with this size (64K, 1G…).") var size: String?
        @Flag(help: "Free the region and its pages.") var destroy = false

        func run() throws {
            try node.withPool { pool in
                if destroy {
                    guard size == nil else { throw ValidationError("--destroy takes no --size") }
                    try pool.destroyRegion(name: name)
                    return print("destroyed region '\(name)'")
                }
                let region = try size.map { try pool.createRegion(name: name, size: ByteSize.parse($0)) }
                    ?? pool.openRegion(name: name)
                print("\(region.address) \(region.size)")
            }
        }
    }
}

/// A global address argument, `SHELF:0xOFFSET`.
struct Address: ExpressibleByArgument {
    let value: GlobalAddress
    init?(argument: String) {
        guard let value = GlobalAddress(argument) else { return nil }
        self.value = value
    }
}
