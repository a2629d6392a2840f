import ArgumentParser
import PoolNet

struct KeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "key",
        abstract: "Make a pool key, which a memory node's clients must hold.",
        subcommands: [Create.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write 32 random bytes to FILE (mode 0600); FILE must not exist.",
            discussion: """
                Give the same file to `poolfs serve --key-file` and to its clients. The key proves a \
                client may use the pool; it does not encrypt the bytes on the wire.
                """)

        @Argument(help: "The key file to make.") var file: String

        func run() throws {
            try reportingErrors { try NodeKey.create(at: file) }
        }
    }
}
