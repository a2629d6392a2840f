import ArgumentParser
import PoolCore
import PoolNet

struct GrowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grow",
        abstract: "Add a shelf to a pool, even while other processes use it.",
        discussion: """
            With --remote, the shelf's bytes live on a memory node (`poolfs serve`): SIZE is \
            reserved there as a region of the node's pool, and only the shelf's page table \
            stays here. Files go there by placement: `poolfs heap policy POOL HEAP remote`.
            """)

    @OptionGroup var pool: PoolLocation

    @Option(help: "Size of the new shelf.")
    var by: String

    @Option(help: ArgumentHelp("Put the shelf's bytes on the memory node at HOST:PORT.", valueName: "HOST:PORT"))
    var remote: String?

    @Option(help: ArgumentHelp("The node's key (poolfs key create), with --remote.", valueName: "FILE"))
    var keyFile: String?

    func run() throws {
        try pool.withPool { opened in
            let size = try parseSize(by)
            let index: Int
            if let remote {
                guard let keyFile else { throw ValidationError("--remote needs --key-file FILE (the node's key)") }
                index = try opened.grow(by: size) { shelf, bytes in
                    try RemoteShelves.reserve(on: remote, keyFile: keyFile, poolUUID: opened.uuid, shelf: shelf, bytes: bytes)
                }
            } else {
                guard keyFile == nil else { throw ValidationError("--key-file goes with --remote HOST:PORT") }
                index = try opened.grow(by: size)
            }
            let info = opened.info()
            print("added \(remote == nil ? "" : "remote ")shelf \(index) (\(ByteSize.format(size))\(remote.map { " on \($0)" } ?? "")) to pool '\(info.name)': "
                + "capacity now \(ByteSize.format(info.capacityBytes))")
        }
    }
}
