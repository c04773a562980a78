// libyaml, as Yams bundles it: its event parser sees aliases before anything expands them.
internal import CYaml
import Foundation

/// The most YAML nodes a config file may hold once its aliases are expanded. A full config is a
/// few hundred; nested aliases ("billion laughs") reach billions from a kilobyte of text.
let maximumExpandedYAMLNodes = 20_000

/// Counts the nodes `text` holds with every alias expanded, from libyaml's events and without
/// expanding anything: an alias counts as the size of the node its anchor names. Throws as soon
/// as the count passes `limit`, so a bomb costs only `limit` events. Syntax errors are left to
/// the parser that follows, which reports them with their context.
func checkYAMLExpansion(_ text: String, file: String, limit: Int = maximumExpandedYAMLNodes) throws {
    var parser = yaml_parser_t()
    guard yaml_parser_initialize(&parser) == 1 else { throw ConfigError("\(file): cannot start the YAML parser") }
    defer { yaml_parser_delete(&parser) }
    var bytes = Array(text.utf8)
    try bytes.withUnsafeMutableBufferPointer { input in
        yaml_parser_set_input_string(&parser, input.baseAddress, input.count)
        var expanded = 0
        var anchorSizes: [String: Int] = [:]
        // Collections being read: their anchor and the count when they started.
        var open: [(anchor: String?, start: Int)] = []
        while true {
            var event = yaml_event_t()
            guard yaml_parser_parse(&parser, &event) == 1 else { return }
            defer { yaml_event_delete(&event) }
            let line = Int(event.start_mark.line) + 1
            func name(_ anchor: UnsafeMutablePointer<yaml_char_t>?) -> String? { anchor.map { String(cString: $0) } }
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return
            case YAML_SCALAR_EVENT:
                expanded += 1
                if let anchor = name(event.data.scalar.anchor) { anchorSizes[anchor] = 1 }
            case YAML_ALIAS_EVENT:
                expanded += name(event.data.alias.anchor).flatMap { anchorSizes[$0] } ?? 1
            case YAML_SEQUENCE_START_EVENT:
                expanded += 1
                open.append((name(event.data.sequence_start.anchor), expanded - 1))
            case YAML_MAPPING_START_EVENT:
                expanded += 1
                open.append((name(event.data.mapping_start.anchor), expanded - 1))
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                if let collection = open.popLast(), let anchor = collection.anchor { anchorSizes[anchor] = expanded - collection.start }
            default:
                break
            }
            if expanded > limit {
                throw ConfigError(
                    "\(file) line \(line): the YAML expands to more than \(limit) nodes through its aliases (*name); "
                        + "a config needs a few hundred")
            }
        }
    }
}
