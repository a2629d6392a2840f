import PoolCore

/// README's example of code written once against `PageMemory`: a hash table
/// in one region, shared by every client of a memory node (Rcmp's DHT) or
/// by the processes of one machine. Open addressing over 16-byte slots
/// (key, value); a key claims its slot by CAS, so clients inserting at
/// once never take the same one. Key 0 marks an empty slot.
struct SharedHashTable {
    let memory: any PageMemory
    let base: GlobalAddress
    let slots: Int

    struct Full: Error {}

    func put(_ key: UInt64, _ value: UInt64) throws {
        precondition(key != 0, "key 0 marks an empty slot")
        for probe in 0..<slots {
            let slot = address(of: key, probe: probe)
            let claim = try memory.compareAndSwap(at: slot, expected: 0, desired: key)
            if claim.exchanged || claim.original == key {
                try withUnsafeBytes(of: value.littleEndian) { try memory.write(at: slot.advanced(by: 8), from: $0) }
                return
            }
        }
        throw Full()
    }

    func get(_ key: UInt64) throws -> UInt64? {
        for probe in 0..<slots {
            let slot = try memory.read(at: address(of: key, probe: probe), count: 16)
            let found = slot[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            if found == 0 { return nil }
            if found == key { return slot[8..<16].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        }
        return nil
    }

    private func address(of key: UInt64, probe: Int) -> GlobalAddress {
        let hash = (key &* 0x9e37_79b9_7f4a_7c15) >> 32
        return base.advanced(by: (hash &+ UInt64(probe)) % UInt64(slots) * 16)
    }
}
