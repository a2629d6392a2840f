import ArgumentParser
import PoolCore

struct TrimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trim",
        abstract: "Give the memory (or disk blocks) of a pool's free pages back now.",
        discussion: """
            A mounted pool gives back its dram shelves' free pages by itself within seconds.
            trim does it at once, for every shelf, pmem and disk-backed ones included,
            which otherwise keep their blocks. Safe while the pool is in use.
            """)

    @OptionGroup var pool: PoolLocation

    func run() throws {
        try pool.withPool { opened in
            let given = opened.trim()
            print("pool '\(pool.name)': gave back \(ByteSize.format(given)); \(ByteSize.format(opened.residentBytes)) resident")
        }
    }
}
