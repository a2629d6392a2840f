import Foundation

/// The one JSON form the command and the mount print (`--json`,
/// `.pool/info.json`): indented, keys sorted, slashes left alone.
public enum JSONText {
    public static func encode<Value: Encodable>(_ value: Value) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Our reports hold strings and numbers only: encoding cannot fail.
        return String(decoding: try! encoder.encode(value), as: UTF8.self)
    }
}
