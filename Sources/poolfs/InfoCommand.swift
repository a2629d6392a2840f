import ArgumentParser
import Foundation
import PoolCore
import PoolFS

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Show a pool's capacity, use, shelves, regions and users.")

    @OptionGroup var pool: PoolLocation

    @Flag(help: "Print one JSON object.")
    var json = false

    func run() throws {
        try reportingErrors {
            // Read without joining, so that info writes nothing to the
            // pool; while others have it open, by joining it as they do.
            var info: PoolInfo
            do {
                info = try Pool.inspecting(name: pool.name, at: pool.path) { $0.info() }
            } catch PoolError.inUse {
                let opened = try Pool.open(name: pool.name, at: pool.path)
                info = opened.info()
                opened.close()
            }
            info.processes.removeAll { $0 == getpid() }
            // A mount's direct access (libpoolfs-direct.so), counted in its area.
            let direct = DirectLeases.statistics(in: info.path)
            if json {
                print(InfoCommand.json(info, direct))
            } else {
                print(info.report, terminator: "")
                if let direct {
                    print("direct: \(direct.processes) process\(direct.processes == 1 ? "" : "es"); "
                        + "read \(ByteSize.format(direct.bytesRead)) in \(direct.reads), "
                        + "wrote \(ByteSize.format(direct.bytesWritten)) in \(direct.writes)")
                }
            }
        }
    }

    /// The pool's info, and what direct access served, as one object.
    static func json(_ info: PoolInfo, _ direct: DirectLeases.Statistics?) -> String {
        let text = JSONText.encode(info)
        guard let direct, var object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            return text
        }
        object["directProcesses"] = direct.processes
        object["directReads"] = direct.reads
        object["directBytesRead"] = direct.bytesRead
        object["directWrites"] = direct.writes
        object["directBytesWritten"] = direct.bytesWritten
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else { return text }
        return String(decoding: data, as: UTF8.self)
    }
}
