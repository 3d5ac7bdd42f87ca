import FileFormats

extension ModelFile {
    /// The model file (docs/MODEL.md) that `ModelFile.parse` reads back to an equal value:
    /// every layer written out (no `layer_defaults`), fields at their defaults left out — both
    /// from the field tables (`ModelDraft.fields`, `LayerDraft.fields`).
    package func document() -> JSONValue {
        var draft = ModelDraft()
        (draft.name, draft.dModel, draft.dFF, draft.activation) = (model.name, model.dModel, model.dFF, model.activation)
        (draft.norm, draft.normEpsilon, draft.ffnBias, draft.source) = (model.norm, model.normEpsilon, model.ffnBias, model.origin)
        (draft.gluAlpha, draft.gluLimit) = (Double(model.glu.alpha), Double(model.glu.limit))
        draft.overlapDegree = overlapDegree
        draft.expertPrecision = model.expertPrecision
        var members = ModelDraft.fields.write(draft)
        members.append(("layers", .array(model.layers.map { .object(LayerDraft.fields.write(LayerDraft($0))) })))
        if let decoder = model.decoder { members.append(("decoder", .object(DecoderDraft.fields.write(DecoderDraft(decoder))))) }
        if !model.taskExperts.isEmpty {
            members.append(("task_experts", .object(model.taskExperts.sorted { $0.key < $1.key }.map {
                (String($0.key), .array($0.value.map { .number(Double($0)) }))
            })))
        }
        return .object(members)
    }

    /// docs/MODEL.md's field tables: the top level, a layer's, the decoder's.
    package static func fieldTables() -> (model: [String], layer: [String], decoder: [String]) {
        (ModelDraft.fields.markdownRows(), LayerDraft.fields.markdownRows(), DecoderDraft.fields.markdownRows())
    }
}

extension ModelConfiguration {
    /// The model as a model file without run knobs (`ModelFile.document`).
    package func document() -> JSONValue { ModelFile(model: self).document() }
}
