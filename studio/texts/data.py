"""Data errors and data advice: what is wrong with a file or its rows, and the fix."""

MESSAGES: dict[str, tuple[str, str]] = {
    # ---- studio/data/readers.py: reading a file, a saved folder or a Hub dataset
    "data.supported": (
        "CSV, JSON, JSONL, Parquet, or a folder written by datasets.save_to_disk",
        "CSV、JSON、JSONL、Parquet，或由 datasets.save_to_disk 写出的文件夹"),
    "data.none_parens": ("(none)", "（无）"),
    "data.unknown_file_type": (
        "{path}: unknown file type '{suffix}'; use {supported}",
        "{path}：未知的文件类型 '{suffix}'；请使用 {supported}"),
    "data.relative_path": (
        " (a relative path is read from the folder the studio was started in)",
        "（相对路径从启动 studio 时所在的文件夹算起）"),
    "data.file_not_found": (
        "file not found: {source}; check the path{relative}",
        "找不到文件：{source}；请检查路径{relative}"),
    "data.empty_file": (
        "{name} is empty (0 rows): add rows, or point at another file",
        "{name} 是空的（0 行）：请添加数据行，或换一个文件"),
    "data.nested_too_deeply": (
        "{path}: the JSON is nested too deeply (over {limit} levels of lists or objects): "
        "flatten the rows to a few levels",
        "{path}：JSON 嵌套过深（列表或对象超过 {limit} 层）：请把数据行压平到几层以内"),
    "data.unreadable_file": (
        "{path}: could not be read as {kind} ({error}: {detail}); check the file or re-save it",
        "{path}：无法按 {kind} 读取（{error}: {detail}）；请检查文件，或重新保存一次"),
    "data.utf16": (
        "{path} is UTF-16, not UTF-8: re-save it as UTF-8",
        "{path} 是 UTF-16 编码，不是 UTF-8：请另存为 UTF-8"),
    "data.looks_cp1252": (
        "; it looks like Windows-1252/Latin-1",
        "；看起来是 Windows-1252/Latin-1 编码"),
    "data.not_utf8": (
        "{path} is not UTF-8: byte 0x{byte:02x} at offset {offset} (line {line}) is not valid "
        "UTF-8{guess}; re-save the file as UTF-8 (e.g. Excel: Save As > 'CSV UTF-8', or "
        "iconv -f cp1252 -t utf-8)",
        "{path} 不是 UTF-8 编码：偏移 {offset} 处（第 {line} 行）的字节 0x{byte:02x} 不是有效的 "
        "UTF-8{guess}；请把文件另存为 UTF-8（例如 Excel：另存为 > 'CSV UTF-8'，或 "
        "iconv -f cp1252 -t utf-8）"),
    "data.malformed_csv": (
        "{path}: malformed CSV: {detail}; check quoting on that line",
        "{path}：CSV 格式有误：{detail}；请检查该行的引号"),
    "data.invalid_json": (
        "{path} line {line}, column {column}: invalid JSON: {detail}",
        "{path} 第 {line} 行第 {column} 列：JSON 无效：{detail}"),
    "data.json_not_rows": (
        "{path}: expected a list of objects or {{\"data\": [...]}}, found a JSON {kind}",
        "{path}：应为对象列表或 {{\"data\": [...]}}，实际是 JSON {kind}"),
    "data.json_object_keys": (
        "{path}: expected a list of objects or {{\"data\": [...]}}, found an object with keys "
        "{keys}",
        "{path}：应为对象列表或 {{\"data\": [...]}}，实际是一个对象，其键为：{keys}"),
    "data.invalid_jsonl": (
        "{path} line {line}, column {column}: invalid JSON: {detail}; each line must be one "
        "JSON object",
        "{path} 第 {line} 行第 {column} 列：JSON 无效：{detail}；每行必须是一个 JSON 对象"),
    "data.jsonl_not_object": (
        "{path} line {line}: expected a JSON object, found a {kind}",
        "{path} 第 {line} 行：应为 JSON 对象，实际是 {kind}"),
    "data.item_not_object": (
        "{path}: item {item} is a {kind}, not an object",
        "{path}：第 {item} 项是 {kind}，不是对象"),
    "data.bad_parquet": (
        "{path}: not a readable Parquet file ({detail})",
        "{path}：不是可读取的 Parquet 文件（{detail}）"),
    "data.folder_not_saved": (
        "{path} is a folder but not one written by datasets.save_to_disk (no dataset_dict.json "
        "or state.json): point at a data file inside it",
        "{path} 是文件夹，但不是由 datasets.save_to_disk 写出的（没有 dataset_dict.json 或 "
        "state.json）：请指向其中的某个数据文件"),
    "data.bad_saved": (
        "{path}: could not read the saved dataset ({detail})",
        "{path}：无法读取保存的数据集（{detail}）"),
    "data.no_split": (
        "{path} has no '{split}' split; its splits are {splits}: pass one of those",
        "{path} 没有 '{split}' 划分；它的划分有 {splits}：请从中选一个"),
    "data.hub.offline": (
        "offline mode (HF_HUB_OFFLINE is set) and it is not in the local cache",
        "处于离线模式（已设置 HF_HUB_OFFLINE），本地缓存中也没有它"),
    "data.hub.no_network": (
        "no network (the Hub cannot be reached)",
        "没有网络（无法连接 Hub）"),
    "data.hub.failed": (
        "could not load Hub dataset {name}: {why}; no local file or folder has that name "
        "either: give a local file ({supported})",
        "无法加载 Hub 数据集 {name}：{why}；也没有同名的本地文件或文件夹：请提供本地文件"
        "（{supported}）"),
    "data.hub.error": (
        "could not load Hub dataset {name}: {error}: {detail}; no local file or folder has "
        "that name either: give a local file ({supported})",
        "无法加载 Hub 数据集 {name}：{error}: {detail}；也没有同名的本地文件或文件夹：请提供本地"
        "文件（{supported}）"),

    # ---- studio/data/shapes.py: the shapes of rows, as the report describes them
    "data.shape.preference": ("preference pairs: a prompt, a chosen and a rejected answer",
                              "偏好对：一个提示、一个较好回答（chosen）和一个较差回答（rejected）"),
    "data.shape.sharegpt": (
        "ShareGPT: a column of [{{from, value}}] turns",
        "ShareGPT：一列 [{{from, value}}] 对话轮次"),
    "data.shape.messages": (
        "messages: a column of [{{role, content}}] turns",
        "messages：一列 [{{role, content}}] 对话轮次"),
    "data.shape.alpaca": (
        "Alpaca: instruction, input, output (or prompt, query, response)",
        "Alpaca：instruction、input、output 三列（或 prompt、query、response）"),
    "data.shape.prompt_completion": ("prompt/completion", "prompt/completion 两列"),
    "data.shape.input_output": ("input/output", "input/output 两列"),
    "data.shape.instruction": (
        "instruction/response (also question/answer, prompt/response, ...)",
        "instruction/response 两列（也可以是 question/answer、prompt/response 等）"),
    "data.shape.text": ("plain text", "纯文本"),
    "data.shape.segments": (
        "Axolotl input_output: a column of [{{text, label}}] segments",
        "Axolotl input_output：一列 [{{text, label}}] 片段"),
    "data.shape.template": (
        "custom prompt template: {{placeholder}} -> column",
        "自定义提示词模板：{{占位符}} -> 列"),
    "data.shape.or": ("{shapes}; {shape}", "{shapes}；或 {shape}"),
    "data.how_to_map": (
        "--column-mapping instruction=COL response=COL (or messages=COL, or text=COL)",
        "--column-mapping instruction=COL response=COL（或 messages=COL，或 text=COL）"),
    "data.shape_unknown": (
        "could not tell the shape of the rows from columns {columns}. Supported: {shapes}. "
        "Map yours, e.g. {how}",
        "无法从列 {columns} 判断数据行的形状。支持的形状：{shapes}。请映射你的列，例如 {how}"),
    # why this shape was chosen
    "data.reason.mapped": (
        "column mapping given: {pairs} ({shape})",
        "按给定的列映射：{pairs}（{shape}）"),
    "data.reason.forced": (
        "dataset_format={name} was asked for: {pairs} ({shape})",
        "指定了 dataset_format={name}：{pairs}（{shape}）"),
    "data.reason.found": (
        "found columns: {pairs} ({shape})",
        "找到的列：{pairs}（{shape}）"),
    "data.reason.turns": (
        "column '{column}' holds lists of {keys} turns ({kind})",
        "列 '{column}' 存放的是 {keys} 对话轮次列表（{kind}）"),
    "data.reason.tools": (
        "{reason}, tool schemas in '{column}'",
        "{reason}，工具定义在列 '{column}'"),
    "data.reason.unknown_tags": (
        "{reason}; unknown role tags mapped to user: {tags}",
        "{reason}；未知的角色标签已映射为 user：{tags}"),
    "data.reason.remapped": (
        "{reason}; role tags re-mapped: {pairs}",
        "{reason}；已重新映射的角色标签：{pairs}"),
    "data.reason.template": (
        "custom prompt template; {{{placeholder}}} (column '{column}') and what follows it are "
        "trained",
        "自定义提示词模板；训练 {{{placeholder}}}（列 '{column}'）及其后的内容"),
    # what is wrong with the columns, the mapping or the template
    "data.where.mapping": ("column mapping {role}={column}", "列映射 {role}={column}"),
    "data.where.placeholder": (
        "prompt_template placeholder {{{placeholder}}}",
        "prompt_template 占位符 {{{placeholder}}}"),
    "data.did_you_mean": ("; did you mean '{column}'?", "；你是不是想用 '{column}'？"),
    "data.no_column": (
        "column '{column}' not found ({where}){hint} columns: {columns}",
        "找不到列 '{column}'（{where}）{hint}现有的列：{columns}"),
    "data.unknown_roles": (
        "unknown role(s) in column mapping: {roles}; roles are {known}",
        "列映射中有未知的角色：{roles}；可用的角色有 {known}"),
    "data.unknown_format": (
        "unknown dataset_format '{name}'; choose auto or one of {formats}",
        "未知的 dataset_format '{name}'；请选择 auto 或以下之一：{formats}"),
    "data.format_needs_column": (
        "dataset_format '{name}' needs a '{role}' column; columns: {columns}; map it with "
        "--column-mapping {role}=COL",
        "dataset_format '{name}' 需要一个 '{role}' 列；现有的列：{columns}；请用 "
        "--column-mapping {role}=COL 映射"),
    "data.no_conversations": (
        "column '{column}' holds no conversations (lists of {{role, content}} or "
        "{{from, value}} turns)",
        "列 '{column}' 中没有对话（{{role, content}} 或 {{from, value}} 轮次的列表）"),
    "data.turns_no_role": (
        "the turns in column '{column}' have no 'role' or 'from' key (keys found: {keys})",
        "列 '{column}' 中的轮次没有 'role' 或 'from' 键（找到的键：{keys}）"),
    "data.none": ("none", "无"),
    "data.role_mapping.role": (
        "role mapping {tag}={role}: the role must be one of {roles}",
        "角色映射 {tag}={role}：角色必须是以下之一：{roles}"),
    "data.role_mapping.tag": (
        "role mapping {tag}={role}: no turn in the data has the tag '{tag}' (tags seen: {seen})",
        "角色映射 {tag}={role}：数据中没有带标签 '{tag}' 的轮次（出现过的标签：{seen}）"),
    "data.template.unnamed": (
        "prompt_template needs named {{placeholders}} for the columns, e.g. "
        "'### Instruction: {{instruction}}\\n### Response: {{response}}'",
        "prompt_template 需要用带名字的 {{占位符}} 对应各列，例如 "
        "'### Instruction: {{instruction}}\\n### Response: {{response}}'"),
    "data.template.no_response": (
        "prompt_template has no response placeholder among {fields}: add {{response}} where "
        "the answer goes, or name it with --column-mapping response=PLACEHOLDER",
        "prompt_template 的占位符 {fields} 中没有回答占位符：请在回答的位置加上 {{response}}，"
        "或用 --column-mapping response=PLACEHOLDER 指定"),
    "data.template.malformed": (
        "prompt_template is malformed ({detail}): write placeholders as {{column}} and literal "
        "braces as {{{{ and }}}}",
        "prompt_template 格式有误（{detail}）：占位符写作 {{column}}，字面的花括号写作 "
        "{{{{ 和 }}}}"),
    # what one row holds that cannot be turned into messages
    "data.bad_segment": (
        "segment {segment} needs a text and a true/false label, got {item}",
        "片段 {segment} 需要 text 和 true/false 的 label，实际是 {item}"),
    "data.bad_history": (
        "history item {item} is not a [prompt, response] pair: {pair}",
        "history 第 {item} 项不是 [prompt, response] 对：{pair}"),
    "data.turn_not_object": (
        "turn {turn} is a {kind}, not an object with role/content or from/value",
        "第 {turn} 轮是 {kind}，不是带 role/content 或 from/value 的对象"),
    "data.tool_call.not_json": (
        "turn {turn}: the tool call is not JSON {{name, arguments}}: {value}",
        "第 {turn} 轮：工具调用不是 JSON {{name, arguments}}：{value}"),
    "data.tool_call.no_name": (
        "turn {turn}: a tool call needs a name and arguments, got {item}",
        "第 {turn} 轮：工具调用需要 name 和 arguments，实际是 {item}"),
    "data.tools_not_json": (
        "the tools column is not valid JSON ({detail})",
        "tools 列不是有效的 JSON（{detail}）"),
    # problems the report counts, by row
    "data.problem.unknown_tags": (
        "unknown role tags mapped to user",
        "未知角色标签（已映射为 user）"),
    "data.problem.non_text_parts": (
        "non-text parts skipped ({kind})",
        "跳过的非文本部分（{kind}）"),
    # why no conversation has an answer to train
    "data.no_answer.untrained": (
        "every assistant turn is marked not to train (weight 0 or training false)",
        "每个 assistant 轮次都标记为不训练（weight 为 0 或 training 为 false）"),
    "data.no_answer.no_content": (
        "the assistant turns have no 'content' or 'value' (their keys: {keys})",
        "assistant 轮次没有 'content' 或 'value'（它们的键：{keys}）"),
    "data.no_answer.no_text_parts": (
        "the assistant turns' content is a list of parts with no text (parts: {parts}; text "
        "parts need a 'text' or 'value')",
        "assistant 轮次的 content 是不含文本的部分列表（部分：{parts}；文本部分需要 'text' 或 "
        "'value'）"),
    "data.no_answer.empty": (
        "the assistant turns' content is empty",
        "assistant 轮次的 content 是空的"),

    # ---- studio/data/templates.py: the chat template and what it drops
    "data.problem.reasoning_off": (
        "reasoning dropped (enable_thinking is off)",
        "已丢弃的推理内容（enable_thinking 已关闭）"),
    "data.problem.reasoning_lost": (
        "reasoning the chat template drops",
        "聊天模板丢弃的推理内容"),
    "data.problem.tool_calls_lost": (
        "tool calls the chat template drops",
        "聊天模板丢弃的工具调用"),
    "data.problem.tools_lost": (
        "tool schemas the chat template drops",
        "聊天模板丢弃的工具定义"),
    "data.identity.drop": (
        "{rows} of {total} rows give the assistant a name or maker of its own, and the chat "
        "template would tell it otherwise ({prompt!r}): its system prompt is dropped "
        "(template_system_prompt drop; set keep to keep it)",
        "{total} 行中有 {rows} 行给了助手自己的名字或出品方，而聊天模板自带的系统提示词说的是"
        "另一回事（{prompt!r}）：因此去掉模板的系统提示词（template_system_prompt 设为 drop；"
        "设为 keep 可保留）"),
    "data.problem.call_only_turns": (
        "assistant turns that only call a tool, which the chat template shows as empty: not "
        "trained (pick a Qwen3 model, whose template renders tool calls, to train them)",
        "只调用工具的 assistant 轮次：聊天模板把它们显示为空，因此不参与训练（要训练它们，请选用"
        "能显示工具调用的 Qwen3 模型）"),
    "data.problem.placeholders": (
        "rows with an unfilled placeholder such as {{{{name}}}}: fill it in before training, or "
        "the model learns to say it",
        "含有未填写占位符（如 {{{{name}}}}）的行：请在训练前填好，否则模型会学着把它说出来"),
    "data.turn_not_rendered": (
        "assistant turn {turn} was not found in the chat template's output",
        "在聊天模板的输出中找不到第 {turn} 个 assistant 轮次"),
    "data.turn_text_not_rendered": (
        "assistant turn {turn}'s text was not found where the chat template put that turn",
        "在聊天模板放置第 {turn} 个 assistant 轮次的位置找不到它的文本"),
    "data.no_chat_template": (
        "the tokenizer has no chat template: set prompt_template, e.g. "
        "'### Instruction: {{instruction}}\\n### Response: {{response}}'",
        "分词器没有聊天模板：请设置 prompt_template，例如 "
        "'### Instruction: {{instruction}}\\n### Response: {{response}}'"),

    # ---- studio/data/prepare.py: the report's problems, advice, and why nothing is left
    "data.the_dataset": ("the dataset", "数据集"),
    "data.in_file": ("{name}: {problem}", "{name} 出错：{problem}"),
    "data.cancelled_after": (
        "{name}: the analysis was cancelled after {rows:,} rows",
        "{name}：分析在 {rows:,} 行后已取消"),
    "data.row_problem": ("row {row}: {problem}", "第 {row} 行：{problem}"),
    "data.problem.empty_rows": ("empty rows", "空行"),
    "data.problem.duplicate_rows": ("duplicate rows", "重复行"),
    "data.problem.empty_response": ("rows with an empty response", "回答为空的行"),
    "data.problem.empty_side": ("pairs with no prompt, or an empty chosen or rejected answer",
                                "没有提示，或较好/较差回答为空的偏好对"),
    "data.problem.same_sides": ("pairs whose chosen and rejected answers are the same",
                                "较好回答与较差回答相同的偏好对"),
    "data.not_pairs": (
        "dpo learns from preference pairs: columns chosen and rejected (and a prompt, or "
        "conversations that share it), but this file reads as {shape}",
        "dpo 需要偏好对：chosen 和 rejected 两列（再加一个提示列，或共享提示的对话），但这个文件"
        "被识别为 {shape}"),
    "data.no_pairs_left": ("no pair is left to learn from: each has an empty side or two equal "
                           "answers", "没有可学习的偏好对：每一对都有一边为空，或两边回答相同"),
    "data.problem.unmappable": ("unmappable rows", "无法映射的行"),
    "data.problem.no_trained_tokens": ("rows with no trained tokens", "没有可训练 token 的行"),
    "data.problem.not_text": (
        "responses that are not text (a list, number or object): trained as its JSON text",
        "不是文本的回答（列表、数字或对象）：按其 JSON 文本训练"),
    "data.advice.time_budget": (
        "analysed the first {read:,} of {total:,} rows within {seconds:.0f} s (a run prepares "
        "them all)",
        "在 {seconds:.0f} 秒内分析了 {total:,} 行中的前 {read:,} 行（训练时会准备全部数据行）"),
    "data.lost.tool_calls": ("tool calls", "工具调用"),
    "data.lost.tools": ("tool schemas", "工具定义"),
    "data.lost.reasoning": ("reasoning", "推理内容"),
    "data.lost.two": ("{first} and {second}", "{first}和{second}"),
    "data.lost.three": ("{first} and {second} and {third}", "{first}、{second}和{third}"),
    "data.advice.template_drops": (
        "this model's chat template drops the {what} in the data: pick a Qwen3 model, whose "
        "chat template renders tool calls, tool schemas and thinking",
        "这个模型的聊天模板会丢弃数据中的{what}：请选择 Qwen3 模型，它的聊天模板能呈现工具调用、"
        "工具定义和思考过程"),
    "data.left.no_segment": (
        "no row has a segment labelled true with text in column '{column}' (those segments "
        "train); row {row}: {example}",
        "列 '{column}' 中没有任何一行含有 label 为 true 且有文本的片段（训练的正是这些片段）；"
        "第 {row} 行：{example}"),
    "data.left.role_tags": (
        "check the role tags (seen: {seen})",
        "请检查角色标签（出现过的：{seen}）"),
    "data.left.no_answer": (
        "no conversation in column '{column}' has an assistant turn with content: {why}; "
        "row {row}: {example}",
        "列 '{column}' 中没有任何对话含有带内容的 assistant 轮次：{why}；第 {row} 行：{example}"),
    "data.left.empty_responses": (
        "every row's response column '{column}' is empty: fill it in, or map the right column "
        "with --column-mapping {role}=COL",
        "每一行的回答列 '{column}' 都是空的：请填上内容，或用 --column-mapping {role}=COL "
        "映射正确的列"),
    "data.left.empty_rows": (
        "every row is empty: check the file",
        "每一行都是空的：请检查文件"),
    "data.left.unmappable": (
        "no row could be read as {name} ({error}): check the dataset_format and column mapping",
        "没有任何一行能按 {name} 读取（{error}）：请检查 dataset_format 和列映射"),
    "data.left.no_trained_tokens": (
        "prompts are {shortest}..{longest} tokens but max_seq_length is {limit}: raise "
        "max_seq_length or shorten prompts",
        "提示词有 {shortest}..{longest} 个 token，但 max_seq_length 只有 {limit}：请调大 "
        "max_seq_length，或缩短提示词"),
    "data.left.count": ("{n} {problem}", "{n} 个{problem}"),
    "data.left.counts": ("{counts}, {n} {problem}", "{counts}，{n} 个{problem}"),
    "data.left.several": (
        "no row is left to train ({counts}); most: {fix}",
        "没有剩下可训练的行（{counts}）；最多的原因：{fix}"),

    # ---- studio/data/analysis.py: the Data tab's analysis of a file
    "data.upload_too_big": (
        "{name} is {mib:,.0f} MiB, over the upload limit of {limit:,.0f} MiB: give its path "
        "instead, or serve with a higher --max-file-size",
        "{name} 有 {mib:,.0f} MiB，超过了 {limit:,.0f} MiB 的上传上限：请改为填写它的路径，"
        "或用更大的 --max-file-size 启动服务"),
    "data.advice.sample": (
        "analysed a sample: every {every}th row, {rows:,} of {total:,} (a run prepares them all)",
        "分析的是样本：每 {every} 行取一行，共 {total:,} 行中的 {rows:,} 行（训练时会准备全部"
        "数据行）"),
    "data.advice.columns_left_out": (
        "the file has {columns:,} columns: only the first {kept} were read",
        "文件有 {columns:,} 列：只读取了前 {kept} 列"),
    "data.prepare_failed": (
        "the data could not be prepared with {model}'s tokenizer: {detail}",
        "无法用 {model} 的分词器准备数据：{detail}"),
    "data.cancelled": (
        "{name}: the analysis was cancelled",
        "{name}：分析已取消"),
    "data.error_and_note": ("{error} ({note})", "{error}（注：{note}）"),
    "data.error_and_notes": ("{error} ({note}; {other})", "{error}（注：{note}；{other}）"),
}
