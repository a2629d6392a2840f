import ArgumentParser
import PoolCore

struct GrowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grow",
        abstract: "Add a shelf to a pool, even while other processes use it.")

    @OptionGroup var pool: PoolLocation

    @Option(help: "Size of the new shelf.")
    var by: String

    func run() throws {
        try pool.withPool { opened in
            let size = try parseSize(by)
            let index = try opened.grow(by: size)
            let info = opened.info()
            print("added shelf \(index) (\(ByteSize.format(size))) to pool '\(info.name)': capacity now \(ByteSize.format(info.capacityBytes))")
        }
    }
}
