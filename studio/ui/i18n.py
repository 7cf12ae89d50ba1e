"""The page in English and Chinese: one catalog of its texts, the two languages side by side.

Static texts (tabs, headings, labels, help, buttons) go to the browser as keys, `T(key)`, and
Gradio's I18n puts them in the browser's language, or the one picked in the page's header.
Messages the server writes with values inside (`say(key, **values)`) are formatted here in the
language of the request being answered: the page's own, which script() keeps in a cookie, else
the browser's Accept-Language; Chinese for zh-*, English otherwise. What the engine says
(refusals, data errors, advice, preset reasons, the plan's notes) and the config fields' label
and help are written in both languages in studio/texts; `engine` and `error_text` say them here
in the request's language.
"""
from __future__ import annotations

import functools
from dataclasses import fields

import gradio as gr
from gradio.i18n import I18nData

from studio.config import GROUPS, FineTuningConfig, zero_means_automatic
from studio.plan.presets import AUTO, PRESETS, preset_label
from studio.texts import fields as field_texts
from studio.texts.message import localise, message_of
from studio.texts.stored import read_back

LANGUAGES = ("en", "zh")
COOKIE = "qwen3-studio-lang"

# key -> (English, 中文). Keys have a dot: Gradio's own texts sit under single words
# ("file", "common", ...) and a key equal to one of those shows as [object Object].
CATALOG: dict[str, tuple[str, str]] = {
    # ---- the page
    "page.header": (
        "LoRA / QLoRA fine-tuning of Qwen3 models: **1 · Data** → **2 · Model & hardware** → "
        "**3 · Train** → **4 · Chat**. Every run is kept in its own folder under",
        "Qwen3 模型的 LoRA / QLoRA 微调：**1 · 数据** → **2 · 模型与硬件** → **3 · 训练** → "
        "**4 · 对话**。每次运行都单独保存在这个文件夹下："),
    "page.insecure": (
        "Served without a login (--insecure-no-auth): anyone who reaches this address can use "
        "this studio, read its runs and train on this machine.",
        "此页面未设登录（--insecure-no-auth）：任何能访问此地址的人都可以使用本工作室、读取运行记录并在"
        "这台机器上训练。"),
    "page.tab.data": ("1 · Data", "1 · 数据"),
    "page.tab.model": ("2 · Model & hardware", "2 · 模型与硬件"),
    "page.tab.train": ("3 · Train", "3 · 训练"),
    "page.tab.chat": ("4 · Chat", "4 · 对话"),
    "page.tab.eval": ("5 · Evaluate", "5 · 评估"),
    "page.tab.runs": ("6 · Runs", "6 · 运行记录"),
    "page.tab.export": ("7 · Export", "7 · 导出"),

    # Gradio announces a finished event under this key but ships no text for it
    "common.complete": ("Done", "完成"),

    # ---- Runs tab
    "runs.h.all": ("Every run in the runs folder", "运行文件夹里的所有运行"),
    "runs.refresh": ("↻ Refresh", "↻ 刷新"),
    "runs.h.compare": ("Compare runs", "比较运行"),
    "runs.compare": ("runs to overlay and diff", "要叠加曲线并比较配置的运行"),
    "runs.x": ("x axis", "横轴"),
    "runs.x.step": ("step", "步"),
    "runs.x.tokens": ("tokens seen", "已训练 token 数"),
    "runs.x.epoch": ("epoch", "轮"),
    "runs.chart.empty": ("Tick two runs or more to overlay their loss curves",
                         "勾选两个或更多运行来叠加它们的 loss 曲线"),
    "runs.chart.train": ("{run} train loss", "{run} 训练 loss"),
    "runs.chart.eval": ("{run} eval loss", "{run} 验证 loss"),
    "runs.diff.pick": ("Tick two runs or more to see how their configs differ.",
                       "勾选两个或更多运行来查看它们配置的不同。"),
    "runs.diff.same": ("Their configs are the same (apart from the output folder).",
                       "它们的配置相同（输出文件夹除外）。"),
    "runs.diff.field": ("setting", "设置"),
    "runs.steps": ("{n} steps", "{n} 步"),
    "runs.h.one": ("One run", "单个运行"),
    "runs.run": ("run", "运行"),
    "runs.open": ("Open its config in the form", "把它的配置载入表单"),
    "runs.resume": ("↻ Resume", "↻ 继续"),
    "runs.new_name": ("new folder name", "新的文件夹名"),
    "runs.rename": ("Rename", "重命名"),
    "runs.sure": ("Yes, delete it for good", "确定永久删除"),
    "runs.delete": ("Delete", "删除"),
    "runs.pick_first": ("Pick a run first.", "请先选择一个运行。"),
    "runs.opened": ("Loaded the config of {name} into the form.", "已把 {name} 的配置载入表单。"),
    "runs.renamed": ("Renamed {old} to {new}.", "已把 {old} 重命名为 {new}。"),
    "runs.delete.confirm": ("Tick 'Yes, delete it for good' first: a deleted run cannot be "
                            "brought back.", "请先勾选「确定永久删除」：删除的运行无法恢复。"),
    "runs.deleted": ("Deleted {name}.", "已删除 {name}。"),
    "runs.col.name": ("run", "运行"),
    "runs.col.state": ("state", "状态"),
    "runs.col.model": ("model", "模型"),
    "runs.col.dataset": ("dataset", "数据集"),
    "runs.col.rows": ("rows", "行数"),
    "runs.col.lora_r": ("LoRA r", "LoRA 秩"),
    "runs.col.lr": ("learning rate", "学习率"),
    "runs.col.epochs": ("epochs", "轮数"),
    "runs.col.batch": ("batch × accumulation", "批大小 × 累积"),
    "runs.col.train_loss": ("train loss", "训练 loss"),
    "runs.col.eval_loss": ("eval loss", "验证 loss"),
    "runs.col.minutes": ("minutes", "分钟"),
    "runs.col.speed": ("tokens/s", "token/秒"),
    "runs.col.peak": ("peak GiB", "峰值 GiB"),

    # ---- Evaluate tab
    "eval.run": ("fine-tuned run", "微调后的运行"),
    "eval.upload": ("…or evaluate on a file of your own", "…或用你自己的文件评估"),
    "eval.data": ("evaluation file (empty: the run's validation split)",
                  "评估文件（留空：用该运行的验证集）"),
    "eval.data.placeholder": ("runs/uploads/my-questions.jsonl", "例如 runs/uploads/my-questions.jsonl"),
    "eval.n_prompts": ("prompts answered by both models", "两个模型都要回答的提示数"),
    "eval.max_new_tokens": ("max new tokens per answer", "每个回答最多生成的 token 数"),
    "eval.more": ("Benchmarks (lm-eval) and a judge model", "基准测试（lm-eval）与评判模型"),
    "eval.tasks": ("lm-eval tasks", "lm-eval 任务"),
    "eval.tasks.info": ("Task names, task YAML files or local JSONL files of questions and "
                        "answers, separated by spaces (pip install 'qwen3-studio[eval]').",
                        "任务名、任务 YAML 文件或本地问答 JSONL 文件，用空格分隔"
                        "（pip install 'qwen3-studio[eval]'）。"),
    "eval.judge_url": ("judge: OpenAI-compatible endpoint", "评判模型：OpenAI 兼容接口地址"),
    "eval.judge_url.info": ("e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp, Ollama); it scores "
                            "each answer 1-10 against the reference.",
                            "例如 http://127.0.0.1:8000/v1（vLLM、llama.cpp、Ollama）；它按参考"
                            "答案给每个回答打 1-10 分。"),
    "eval.judge_model": ("judge: model name", "评判模型：模型名"),
    "eval.start": ("Evaluate: base vs fine-tuned", "评估：基座与微调后对比"),
    "eval.export": ("Export for EvalScope", "导出为 EvalScope 格式"),
    "eval.exported": ("EvalScope general QA file", "EvalScope 通用问答文件"),
    "eval.status.empty": ("Pick a fine-tuned run, then press Evaluate: both models answer the "
                          "same held-out questions and the report is kept in the run's folder.",
                          "选择一个微调后的运行，然后点击评估：两个模型回答同样的留出问题，"
                          "报告保存在该运行的文件夹里。"),
    "eval.none_yet": ("{name} has not been evaluated yet.", "{name} 还没有评估过。"),
    "eval.latest": ("The latest evaluation of {name} ({created}).", "{name} 最近一次评估（{created}）。"),
    "eval.pick_first": ("Pick a fine-tuned run first.", "请先选择一个微调后的运行。"),
    "eval.judge_both": ("A judge needs both its endpoint and its model name.",
                        "评判模型需要同时填写接口地址和模型名。"),
    "eval.done": ("Evaluated {name}: the report is saved in its folder (eval/).",
                  "{name} 评估完成：报告已保存在它的文件夹（eval/）里。"),
    "eval.exported.note": ("The evaluation set, in EvalScope's general QA layout: {path}",
                           "评估集（EvalScope 通用问答格式）：{path}"),
    "export.run": ("fine-tuned run", "微调后的运行"),
    "export.format": ("export as", "导出为"),
    "export.format.merged": ("merged model (16-bit safetensors: transformers, vLLM)",
                             "合并后的模型（16 位 safetensors：transformers、vLLM）"),
    "export.format.lora": ("LoRA adapter alone (peft, vLLM --enable-lora, llama.cpp --lora)",
                           "仅 LoRA 适配器（peft、vLLM --enable-lora、llama.cpp --lora）"),
    "export.format.gguf": ("GGUF for llama.cpp", "GGUF（llama.cpp）"),
    "export.format.ollama": ("Ollama (GGUF + Modelfile)", "Ollama（GGUF + Modelfile）"),
    "export.quant": ("GGUF quantisation", "GGUF 量化"),
    "export.quant.f16": ("f16 (lossless, largest)", "f16（无损，最大）"),
    "export.quant.q8_0": ("q8_0 (half the size, near lossless)", "q8_0（一半大小，几乎无损）"),
    "export.quant.q4_k_m": ("q4_k_m (a quarter; needs llama-cpp-python)",
                            "q4_k_m（约四分之一；需要 llama-cpp-python）"),
    "export.start": ("Export", "导出"),
    "export.commands": ("how to run it", "运行方式"),
    "export.status.empty": ("Pick a fine-tuned run and a format: the export goes into a new "
                            "folder under the run's exports/, with the commands that run it "
                            "(vLLM, llama.cpp, Ollama).",
                            "选择一个微调后的运行和导出格式：导出内容会放进该运行 exports/ 下的新文件夹，"
                            "并附上运行它的命令（vLLM、llama.cpp、Ollama）。"),
    "export.size": ("About {size} MiB, into {folder}.", "约 {size} MiB，保存到 {folder}。"),
    "export.size_unknown": ("Into {folder} (the base model is not on this machine, so its size "
                            "is not known beforehand).",
                            "保存到 {folder}（基座模型不在本机，无法事先估计大小）。"),
    "export.pick_first": ("Pick a fine-tuned run first.", "请先选择一个微调后的运行。"),
    "export.done": ("Exported {name} to {folder}: {size} MiB in {seconds} s.",
                    "已导出 {name} 到 {folder}：{size} MiB，用时 {seconds} 秒。"),
    "msg.lead.warn": ("Check: ", "请检查："),
    "toast.info": ("Note", "提示"),
    "toast.warn": ("Check", "请检查"),
    "toast.error": ("Error", "错误"),
    "msg.lead.error": ("Cannot continue: ", "无法继续："),
    "run.choice": ("{name} — {state}", "{name} — {state}"),
    "state.new": ("new", "未开始"),
    "state.starting": ("starting", "启动中"),
    "state.running": ("running", "训练中"),
    "state.finished": ("finished", "已完成"),
    "state.stopped": ("stopped", "已停止"),
    "state.interrupted": ("interrupted", "已中断"),
    "state.failed": ("failed", "失败"),
    "state.unreadable": ("unreadable", "无法读取"),
    "choice.auto": ("auto", "自动"),
    "choice.on": ("on", "开"),
    "choice.off": ("off", "关"),
    "choice.keep": ("keep", "保留"),
    "choice.drop": ("drop", "去掉"),
    "field.range": ("({min:g} to {max:g})", "（{min:g} 到 {max:g}）"),
    "field.auto_number": ("0: automatic / not set.", "0：自动 / 不设置。"),

    # ---- Data tab: layout
    "data.h.choose": ("### 1 · Choose a dataset", "### 1 · 选择数据集"),
    "data.upload": ("Drop a CSV, JSON, JSONL or Parquet file here, or click to upload",
                    "把 CSV、JSON、JSONL 或 Parquet 文件拖到这里，或点击上传"),
    "data.path": ("…or a file path, saved-dataset folder or Hub dataset id",
                  "…或填写文件路径、已保存的数据集文件夹或 Hub 数据集 id"),
    "data.path.placeholder": ("data/train.jsonl  or  tatsu-lab/alpaca",
                              "data/train.jsonl  或  tatsu-lab/alpaca"),
    "data.load": ("Load", "加载"),
    "data.cancel": ("Cancel", "取消"),
    "data.cancelled": ("The analysis was cancelled: load the file again, or change a setting, to "
                       "analyse it.", "分析已取消：重新加载文件或修改设置即可再次分析。"),
    "data.examples": ("Examples:", "示例："),
    "data.status.empty": ("No dataset loaded yet: drop a file above or click an example.",
                          "还没有加载数据集：把文件拖到上方，或点击一个示例。"),
    "data.h.shape": ("### 2 · Shape and column mapping", "### 2 · 数据格式与列映射"),
    # the column-mapping dropdowns, one per role a column can play (studio.data's shapes)
    "data.role.messages": ("messages column", "消息列表列 (messages)"),
    "data.role.tools": ("tools column", "工具列 (tools)"),
    "data.role.system": ("system column", "系统提示列 (system)"),
    "data.role.instruction": ("instruction column", "指令列 (instruction)"),
    "data.role.output": ("output column", "输出列 (output)"),
    "data.role.input": ("input column", "输入列 (input)"),
    "data.role.history": ("history column", "历史对话列 (history)"),
    "data.role.prompt": ("prompt column", "提示列 (prompt)"),
    "data.role.completion": ("completion column", "补全列 (completion)"),
    "data.role.response": ("response column", "回答列 (response)"),
    "data.role.text": ("text column", "文本列 (text)"),
    "data.role.segments": ("segments column", "分段列 (segments)"),
    "data.role.chosen": ("chosen answer column", "较好回答列 (chosen)"),
    "data.role.rejected": ("rejected answer column", "较差回答列 (rejected)"),
    "data.role_tags": ("Role tags: edit 'trained as' (system, user, assistant or tool)",
                       "角色标签：可修改“训练为”一栏（system、user、assistant 或 tool）"),
    "data.role_tags.tag": ("role tag in the data", "数据中的角色标签"),
    "data.role_tags.role": ("trained as", "训练为"),
    "data.custom_template": ("Custom prompt template and system prompt",
                             "自定义提示模板与系统提示词"),
    "data.h.rows": ("### Rows", "### 数据行"),
    "data.prev": ("◀ Previous", "◀ 上一页"),
    "data.next": ("Next ▶", "下一页 ▶"),
    "data.page": ("page", "页码"),
    "data.h.example": ("### One example, exactly as the model sees it",
                       "### 一条样例，与模型看到的完全一致"),
    "data.row": ("row #", "行号"),
    "data.rendered": ("rendered example", "渲染后的样例"),
    "data.h.lengths": ("### Lengths, split and problems", "### 长度、划分与问题"),
    "data.trained": ("trained", "参与训练"),
    "data.masked": ("not trained (prompt)", "不训练（提示）"),
    "data.no_rows": ("no rows loaded yet", "尚未加载数据"),
    "data.none": ("(none)", "（无）"),
    "data.chart.empty": ("Token lengths appear here", "token 长度分布显示在这里"),
    "data.chart.unprepared": ("Token lengths appear once the data can be prepared",
                              "数据能够处理后，这里会显示 token 长度"),
    # ---- Data tab: messages
    "data.preparing": ("Once only, about a minute: preparing {model}: {what}",
                       "仅首次，约一分钟：正在准备 {model}：{what}"),
    "data.loaded": ("Loaded {name}: {rows} rows.", "已加载 {name}：{rows} 行。"),
    "data.ready": (" Ready to train.", "可以开始训练。"),
    "data.summary": ("**{rows} rows** · {columns} columns: ", "**{rows} 行** · {columns} 列："),
    "data.undetected": ("**Shape not detected.** Map the columns below, or pick dataset_format.",
                        "**未识别出数据格式。** 请在下面映射各列，或选择 dataset_format。"),
    "data.template_shape": ("**Custom prompt template** — {reason}",
                            "**自定义提示模板** — {reason}"),
    "data.detected": ("**Detected: {name}** — {reason}", "**识别为：{name}** — {reason}"),
    "data.system.replaced": ("replaced by your system_prompt", "会被你的 system_prompt 替换"),
    "data.system.dropped": ("dropped (an empty system turn)", "会被去掉（留一个空的系统轮次）"),
    "data.system.kept": ("kept in every row without a system turn, in training and in the chat",
                         "会保留在每一条没有系统消息的数据里，训练和对话中都是如此"),
    "data.system.note": (
        "This model's chat template adds a system prompt by itself: \u201c{prompt}\u201d. It is "
        "{used}. If it contradicts your data (a new name, a new maker), drop it below or set "
        "system_prompt.",
        "这个模型的对话模板会自动加上一段系统提示：\u201c{prompt}\u201d。它{used}。如果它与你的"
        "数据矛盾（比如新的名字、新的出品方），请在下面去掉它，或设置 system_prompt。"),
    "data.no_thinking": ("This model's chat template has no thinking mode, so thinking cannot "
                         "take effect.",
                         "这个模型的对话模板没有思考模式，所以开启思考不会生效。"),
    "data.example.wait": ("The example appears once the shape is known and the model's "
                          "tokenizer is loaded.",
                          "识别出数据格式并加载模型的 tokenizer 后，这里会显示样例。"),
    "data.example.broken": ("Row {row} cannot be rendered: {error}", "第 {row} 行无法渲染：{error}"),
    "data.example.info": (
        "Row {row} of {rows}: **{tokens} tokens, {trained} trained** (green); the grey part is "
        "the prompt, which the model reads but is not trained on. Thinking {thinking}.",
        "第 {row} 行（共 {rows} 行）：**{tokens} 个 token，其中 {trained} 个参与训练**（绿色）；"
        "灰色部分是提示，模型会读到，但不在上面训练。思考模式：{thinking}。"),
    "data.example.cut": (" Cut at max_seq_length={limit}.", "在 max_seq_length={limit} 处截断。"),
    "data.example.nothing": (" **This row has nothing to train.**",
                             "**这一行没有可训练的内容。**"),
    "data.chart.title": ("{cut} of {rows} rows are longer than max_seq_length and will be cut",
                         "{rows} 行中有 {cut} 行超过 max_seq_length，会被截断"),
    "data.chart.x": ("tokens per row", "每行 token 数"),
    "data.chart.y": ("rows", "行数"),
    "data.split": ("**Split:** {train} rows train · {eval} rows evaluate (val_size {val_size})",
                   "**划分：** {train} 行训练 · {eval} 行评估（val_size {val_size}）"),
    "data.lengths": ("**Tokens per row:** min {min} · median {median} · max {max} · **{cut} cut** "
                     "at {limit}",
                     "**每行 token 数：** 最少 {min} · 中位数 {median} · 最多 {max} · "
                     "**{cut} 行**在 {limit} 处截断"),
    "data.problems": ("**Problems found:**\n\n| problem | rows | e.g. rows |\n|---|---|---|\n",
                      "**发现的问题：**\n\n| 问题 | 行数 | 示例行 |\n|---|---|---|\n"),
    "data.problems.none": ("**Problems found:** none (no empty, duplicate, unmappable or "
                           "untrainable rows).",
                           "**发现的问题：** 无（没有空行、重复行、无法映射或无法训练的行）。"),

    # ---- Model tab: layout
    "model.h.model": ("### Model", "### 模型"),
    "model.name": ("model_name", "模型 (model_name)"),
    "model.name.info": ("A Qwen3 model from the catalog, a Hub id, or a local model folder. "
                        "'bundled' models work offline.",
                        "目录中的 Qwen3 模型、Hub id 或本地模型文件夹。标有“自带”的模型可离线使用。"),
    "model.folder": ("…or a local model folder", "…或本地模型文件夹"),
    "model.folder.placeholder": ("/path/to/model (holds config.json)",
                                 "/path/to/model（含 config.json）"),
    "model.use_folder": ("Use folder", "使用此文件夹"),
    "model.h.settings": ("### Settings", "### 设置"),
    "model.preset": ("preset", "预设"),
    "model.preset.info": ("Sets the fields below; change any of them after. Auto picks one from "
                          "the dataset's size when data is loaded.",
                          "设置下面的各项，之后仍可逐项修改。选“自动”时，加载数据后按数据集大小挑选。"),
    "model.more": ("More settings", "更多设置"),
    "model.h.machine": ("### This machine", "### 本机"),
    "model.h.memory": ("### Memory", "### 内存"),
    "model.h.time": ("### Time", "### 时间"),
    "model.measure": ("Measure a few steps on this machine", "在本机实测几步"),
    "model.h.checks": ("### Checks", "### 检查"),
    "model.h.cli": ("### Command line", "### 命令行"),
    "model.h.config": ("### Config file and past runs", "### 配置文件与历史运行"),
    "model.save_yaml": ("Save config as YAML", "保存配置为 YAML"),
    "model.load_yaml": ("Load a YAML config", "加载 YAML 配置"),
    "model.past_run": ("past run", "历史运行"),
    "model.load_run": ("Load its config", "载入其配置"),
    # ---- Model tab: messages
    "model.where.downloaded": ("  ·  downloaded", "  ·  已下载"),
    "model.where.hub": ("  ·  Hub", "  ·  Hub"),
    "model.where.local": ("{path}  ·  local folder", "{path}  ·  本地文件夹"),
    "hw.gpu": ("- **GPU {index}:** {name} · {total:.0f} GiB ({free:.0f} GiB free) · compute "
               "{major}.{minor}",
               "- **GPU {index}：** {name} · {total:.0f} GiB（空闲 {free:.0f} GiB）· 计算能力 "
               "{major}.{minor}"),
    "hw.no_gpu": ("- **GPU:** no CUDA GPU found, so training runs on the CPU in {precision} "
                  "(slow: fine for the bundled demo models and small tests)",
                  "- **GPU：** 没有找到 CUDA GPU，训练将在 CPU 上以 {precision} 运行（较慢：适合自带"
                  "的演示模型和小测试）"),
    "hw.apple": ("- **Apple Silicon:** yes (the mlx backend can use it)",
                 "- **Apple Silicon：** 有（mlx 后端可以使用）"),
    "hw.cpu": ("- **CPU:** {name} · {cores} cores", "- **CPU：** {name} · {cores} 核"),
    "hw.ram": ("- **RAM:** {total:.0f} GiB ({free:.0f} GiB free now)",
               "- **内存：** {total:.0f} GiB（当前空闲 {free:.0f} GiB）"),
    "hw.extras": ("- **4-/8-bit loading (bitsandbytes):** {bnb} · **W&B:** {wandb}",
                  "- **4/8 位加载（bitsandbytes）：** {bnb} · **W&B：** {wandb}"),
    "hw.available": ("available", "可用"),
    "hw.installed": ("installed", "已安装"),
    "hw.not_installed": ("not installed", "未安装"),
    "hw.table": ("| backend | on this machine |", "| 后端 | 在本机 |"),
    "hw.usable": ("usable", "可用"),
    "hw.not_usable": ("not usable: {why}", "不可用：{why}"),
    "hw.auto": ("\n**auto** picks {reason}", "\n**auto** 的选择：{reason}"),
    "hw.auto_fails": ("\n**auto** cannot pick a backend: {error}",
                      "\n**auto** 无法选出后端：{error}"),
    "model.pick": ("Pick a model.", "请选择一个模型。"),
    "model.size.unknown": ("size unknown", "大小未知"),
    "model.size.billions": ("{n:.2f}B parameters", "{n:.2f}B 参数"),
    "model.size.millions": ("{n:.1f}M parameters", "{n:.1f}M 参数"),
    "model.origin.bundled": ("bundled with the studio: works offline (built on first use)",
                             "随 Qwen3 Studio 附带：可离线使用（首次使用时构建）"),
    "model.origin.local": ("local folder", "本地文件夹"),
    "model.origin.cache": ("in the local Hub cache", "在本地 Hub 缓存中"),
    "model.origin.hub": ("downloaded from the Hub when training starts",
                         "开始训练时从 Hub 下载"),
    "model.cannot_load": ("\n\n**Cannot be loaded here:** {why}", "\n\n**无法在这里加载：** {why}"),
    "model.last_run": ("Last run of this model ({name}): <b>{peak:.2f} GiB</b> measured peak",
                       "该模型上次运行（{name}）：实测峰值 <b>{peak:.2f} GiB</b>"),
    "model.last_run.estimate": (" · {estimate:.2f} GiB estimated", " · 估计 {estimate:.2f} GiB"),
    "mem.none": ("No estimate: the model's architecture is unknown until it is downloaded.",
                 "无法估计：模型下载之前还不知道它的结构。"),
    "mem.weights": ("weights", "权重"),
    "mem.lora": ("LoRA + optimiser", "LoRA + 优化器"),
    "mem.activations": ("activations", "激活值"),
    "mem.overhead": ("overhead", "其他开销"),
    "mem.free": ("free", "空闲"),
    "mem.verdict": ("<b>Estimated peak {total:.2f} GiB</b> of {free:.1f} GiB free {where}: ",
                    "<b>预计峰值 {total:.2f} GiB</b>，{where} 空闲 {free:.1f} GiB："),
    "mem.fits": ("fits.", "放得下。"),
    "mem.too_big": ("<b>does not fit</b>; Start will warn you. Lower batch_size or "
                    "max_seq_length, or turn on load_in_4bit.",
                    "<b>放不下</b>；点“开始”时会提醒你。请调低 batch_size 或 max_seq_length，"
                    "或开启 load_in_4bit。"),
    "time.none": ("No time estimate yet: load a dataset and press Measure (a few steps, about a "
                  "minute on a CPU). After a run, later runs of the same model are estimated from "
                  "it.",
                  "还没有时间估计：加载数据集后点“实测”（跑几步，CPU 上约一分钟）。跑过一次之后，"
                  "同一模型的后续运行会据此估计。"),
    "time.estimate": ("<b>About {duration}</b> for {steps} steps ({tokens:,.0f} tokens at "
                      "{speed:,.0f} tokens/s, {source}).",
                      "<b>约 {duration}</b>，共 {steps} 步（{tokens:,.0f} 个 token，每秒 "
                      "{speed:,.0f} 个 token，{source}）。"),
    "time.long": ("<br>That is long for this machine: fewer epochs or max_steps, a shorter "
                  "max_seq_length, a smaller model, or a GPU would shorten it.",
                  "<br>对这台机器来说偏长：减少轮数或 max_steps、缩短 max_seq_length、换更小的"
                  "模型或使用 GPU 都能缩短时间。"),
    "time.minutes": ("{m} min", "{m} 分钟"),
    "time.hours": ("{h} h {m:02d} min", "{h} 小时 {m:02d} 分钟"),
    "checks.here": ("On this machine: {device}, {precision}{extras}.",
                    "在本机：{device}，{precision}{extras}。"),
    "checks.qlora": (", 4-bit base (QLoRA)", "，4 位基座（QLoRA）"),
    "checks.packing": (", packing", "，序列打包"),
    "checks.checkpointing": (", gradient checkpointing", "，梯度检查点"),
    "checks.backend": (", backend {backend}", "，后端 {backend}"),
    "checks.ok": ("These settings can run here. ", "这些设置可以在这里运行。"),
    "checks.unreadable": ("These settings cannot be read: {error}", "这些设置无法读取：{error}"),
    "model.measuring": ("Training a few steps of these settings in a separate process (loading "
                        "the model takes most of it)",
                        "正在单独的进程里用这些设置训练几步（大部分时间花在加载模型上）"),
    "model.not_folder": ("{path} is not a model folder (it has no config.json): give the folder "
                         "that holds the model's config.json and weights.",
                         "{path} 不是模型文件夹（里面没有 config.json）：请填写存放模型 config.json "
                         "和权重的文件夹。"),
    "model.that": ("That", "这个路径"),
    "model.preset_applied": ("Preset '{name}' applied.", "已应用预设“{name}”。"),
    "model.yaml_loaded": ("Loaded {name}.", "已加载 {name}。"),
    "model.pick_run": ("Pick a past run first.", "请先选择一个历史运行。"),
    "model.run_unreadable": ("The config of {name} cannot be read: {error}",
                             "无法读取 {name} 的配置：{error}"),
    "model.run_loaded": ("Loaded the config of {name}.", "已载入 {name} 的配置。"),
    "preset.why.auto": ("**Auto → {chosen}:** {why}. {preset_why}",
                        "**自动 → {chosen}：** {why}。{preset_why}"),
    "preset.why": ("**{name}:** {preset_why}", "**{name}：** {preset_why}"),

    # ---- Train tab: layout
    "train.start": ("▶ Start training", "▶ 开始训练"),
    "train.stop": ("■ Stop", "■ 停止"),
    "train.resume": ("↻ Resume", "↻ 继续"),
    "train.force": ("Start even if the estimate does not fit", "即使估计放不下也开始"),
    "train.run": ("run (every past run stays here)", "运行（所有历史运行都在这里）"),
    "train.status.empty": ("No run yet. Load data, pick a model, then press Start.",
                           "还没有运行。加载数据、选择模型，然后点“开始训练”。"),
    "train.plan": ("Plan: what this run trains with, beside what was asked for",
                   "计划：本次运行实际使用的设置，与所要求的设置对照"),
    "train.log": ("Log (tail of the run's log.txt)", "日志（运行的 log.txt 末尾）"),
    "train.chart.empty": ("The loss curve appears here after the first logged step",
                          "记录第一步之后，这里会显示 loss 曲线"),
    "train.log.empty": ("(the job's output appears here)", "（任务的输出显示在这里）"),
    # ---- Train tab: messages
    "train.checkpoint": ("checkpoint saved at step {step}", "第 {step} 步已保存 checkpoint"),
    "train.chart.loss": ("train loss", "训练 loss"),
    "train.chart.eval": ("eval loss", "验证 loss"),
    "train.chart.lr": ("learning rate", "学习率"),
    "train.chart.step": ("step", "步"),
    "train.chart.loss_axis": ("loss", "loss"),
    "train.step": ("step <b>{step}</b>", "第 <b>{step}</b> 步"),
    "train.of": (" of {total}", "，共 {total} 步"),
    "train.loss": ("loss <b>{loss:.4f}</b>", "loss <b>{loss:.4f}</b>"),
    "train.elapsed": ("elapsed {clock}", "已用 {clock}"),
    "train.eta": ("ETA <b>{clock}</b>", "预计剩余 <b>{clock}</b>"),
    "train.speed": ("{speed:,.0f} tokens/s", "每秒 {speed:,.0f} 个 token"),
    "train.mfu": ("MFU {mfu:.1%}", "MFU {mfu:.1%}"),
    "train.epoch": ("epoch {epoch:.2f}", "第 {epoch:.2f} 轮"),
    "train.peak": ("peak memory <b>{peak:.2f} GiB</b> measured",
                   "实测内存峰值 <b>{peak:.2f} GiB</b>"),
    "train.peak.estimate": (" · {estimate:.2f} GiB estimated ({share:.0%} of the estimate)",
                            " · 估计 {estimate:.2f} GiB（为估计值的 {share:.0%}）"),
    "train.estimate": ("memory estimate {estimate:.2f} GiB", "内存估计 {estimate:.2f} GiB"),
    "train.starting": ("starting the training process", "正在启动训练进程"),
    "train.training": ("Training {name}: {doing}", "正在训练 {name}：{doing}"),
    "train.finished": ("Finished {name}: {reason}. The adapter is saved in {run}/adapter: try it "
                       "on the Chat tab.",
                       "{name} 已完成：{reason}。适配器保存在 {run}/adapter：可以到“对话”页试试。"),
    "train.stopped": ("Stopped {name}: {reason}", "{name} 已停止：{reason}"),
    "train.interrupted": ("Interrupted {name}: {reason}.{resume}", "{name} 已中断：{reason}。{resume}"),
    "train.resume_hint": (" Press Resume to continue from the last checkpoint.",
                          "点“继续”可从最后一个 checkpoint 接着训练。"),
    "train.no_checkpoint": (" It saved no checkpoint, so start anew.",
                            "它没有保存 checkpoint，只能重新开始。"),
    "train.failed": ("Failed {name}: {reason}", "{name} 失败：{reason}"),
    "train.other_state": ("{name}: {state}", "{name}：{state}"),
    "train.unreadable": ("{name} cannot be read: {reason}", "无法读取 {name}：{reason}"),
    "plan.none": ("The plan appears once the training process has read the hardware.",
                  "训练进程读取硬件信息后，这里会显示计划。"),
    "plan.setting": ("setting", "设置项"),
    "plan.asked": ("asked for (config.yaml)", "要求的（config.yaml）"),
    "plan.ran": ("ran with (plan.yaml)", "实际使用的（plan.yaml）"),
    "plan.backend": ("backend", "后端"),
    "plan.device": ("device", "设备"),
    "plan.precision": ("precision", "精度"),
    "plan.quantisation": ("quantisation", "量化"),
    "plan.micro_batch": ("micro-batch", "微批次"),
    "plan.batch_size": ("batch_size", "批大小 (batch_size)"),
    "plan.gradient_accumulation_steps": ("gradient_accumulation_steps",
                                         "梯度累积 (gradient_accumulation_steps)"),
    "plan.packing": ("packing", "序列打包 (packing)"),
    "plan.gradient_checkpointing": ("gradient_checkpointing",
                                    "梯度检查点 (gradient_checkpointing)"),
    "plan.fused_loss": ("fused_loss", "单核融合损失 (fused_loss)"),
    "plan.whole_logits": ("whole_logits", "整段 logits 损失 (whole_logits)"),
    "plan.layer_graphs": ("layer_graphs", "CUDA 图重放解码层 (layer_graphs)"),
    "plan.attention": ("attention", "注意力实现"),
    "plan.lora_dropout": ("lora_dropout", "LoRA 丢弃率 (lora_dropout)"),
    "plan.planner": ("planner", "批次规划"),
    "train.samples": ("Answers to the sample prompts at each evaluation",
                      "每次验证时样例提示的回答"),
    "train.samples.empty": ("The sample prompts' answers appear here at the first evaluation "
                            "(num_samples rows of the validation split, or your sample_prompts).",
                            "第一次验证时，样例提示的回答显示在这里（验证集的前 num_samples 行，"
                            "或你填写的 sample_prompts）。"),
    "train.samples.prompt": ("prompt", "提示"),
    "train.samples.reference": ("reference", "参考答案"),
    "train.samples.answers": ("answers, newest first", "回答（最新的在前）"),
    "train.samples.at": ("step {step}:", "第 {step} 步："),
    "train.started": ("Started {name}.", "已开始 {name}。"),
    "train.nothing": ("Nothing is training, so there is nothing to stop.",
                      "当前没有在训练的任务，无需停止。"),
    "train.stopping": ("Stopping: the run saves its adapter at the next step and ends. A job "
                       "that does not end within a minute is killed, which frees its memory.",
                       "正在停止：运行会在下一步保存适配器后结束。一分钟内没有结束的任务会被强制"
                       "终止，以释放内存。"),
    "train.resuming": ("Resuming {name} from its last checkpoint.",
                       "正在从最后一个 checkpoint 继续 {name}。"),

    # ---- Chat tab: layout
    "chat.source": ("talk to", "对话对象"),
    "chat.source.info": ("A run with a saved adapter, or a base model (id or folder).",
                         "已保存适配器的运行，或基座模型（id 或文件夹）。"),
    "chat.compare": ("Compare with the base model, side by side", "与基座模型并排对比"),
    "chat.status.empty": ("Pick a fine-tuned run or a base model, then type a message.",
                          "选择一个微调过的运行或基座模型，然后输入消息。"),
    "chat.tuned": ("Fine-tuned", "微调后"),
    "chat.base": ("Base model", "基座模型"),
    "chat.message": ("Type a message and press Enter", "输入消息后按回车"),
    "chat.send": ("Send", "发送"),
    "chat.regenerate": ("↻ Regenerate", "↻ 重新生成"),
    "chat.clear": ("Clear", "清空"),
    "chat.settings": ("Generation settings", "生成设置"),
    "chat.system": ("system prompt", "系统提示词"),
    "chat.system.placeholder": ("(the run's, if it had one)", "（默认用运行自己的，如果有）"),
    "chat.temperature": ("temperature", "温度 (temperature)"),
    "chat.temperature.info": ("0: always the likeliest token", "0：总是选概率最高的 token"),
    "chat.top_p": ("top_p", "核采样 (top_p)"),
    "chat.max_new_tokens": ("max new tokens", "最多生成 token 数"),
    "chat.thinking": ("Qwen3 thinking", "Qwen3 思考模式"),
    "chat.thinking.info": ("Shown folded", "折叠显示"),
    # ---- Chat tab: messages
    "chat.run_choice": ("Fine-tuned: {name} ({state}, base {base})",
                        "微调后：{name}（{state}，基座 {base}）"),
    "chat.base_choice": ("Base: {name}", "基座：{name}"),
    "chat.thinking_bubble": ("Thinking", "思考过程"),
    "chat.empty_reply": ("(empty reply)", "（空回复）"),
    "chat.custom_template": ("its custom prompt template", "它的自定义提示模板"),
    "chat.chat_template": ("the model's chat template", "模型的对话模板"),
    "chat.run_line": ("Fine-tuned run {name} (base {base}), prompted with {template} and thinking "
                      "{thinking}, as in training.",
                      "微调运行 {name}（基座 {base}），与训练时一样使用{template}，思考模式{thinking}。"),
    "chat.base_line": ("Base model {name}.", "基座模型 {name}。"),
    "chat.no_thinking": ("This model's chat template has no thinking mode",
                         "这个模型的对话模板没有思考模式"),
    "chat.unreadable": ("{source} cannot be read: {error}", "无法读取 {source}：{error}"),
    "chat.label.base": ("Base model: {name}", "基座模型：{name}"),
    "chat.label.tuned": ("Fine-tuned: {name}", "微调后：{name}"),
    "chat.who.base": ("the base model", "基座模型"),
    "chat.loading": ("Loading {who}…", "正在加载 {who}…"),
    "chat.loading_gpu": ("Loading {who}… On a GPU its decode step compiles once as it loads, "
                         "which takes minutes for a large model; then replies stream at once.",
                         "正在加载 {who}… 在 GPU 上加载时会编译一次解码步骤，大模型需要几分钟；"
                         "之后回复即时流式输出。"),
    "chat.load_failed": ("Could not load {who}: {error}. Pick a run with a saved adapter, or a "
                         "downloaded base model.",
                         "无法加载 {who}：{error}。请选择已保存适配器的运行，或已下载的基座模型。"),
    "chat.answering": ("{who} is answering… ({pieces} pieces)", "{who} 正在回答…（{pieces} 段）"),
    "chat.failed": ("{who} failed while answering: {error}", "{who} 回答时出错：{error}"),
    "chat.answered": ("{who} answered in {seconds:.1f} s.", "{who} 用时 {seconds:.1f} 秒回答完毕。"),
    "chat.pick_first": ("Pick a fine-tuned run or a base model first.",
                        "请先选择一个微调过的运行或基座模型。"),
    "chat.type_first": ("Type a message first.", "请先输入消息。"),
    "chat.nothing_to_redo": ("Nothing to regenerate yet: send a message first.",
                             "还没有可重新生成的内容：请先发送一条消息。"),
    "chat.cleared": ("Cleared.", "已清空。"),

    # ---- Chat tab: the run served at /v1 (studio/serve/v1.py)
    "serve.toggle": ("Serve this run at /v1 (OpenAI-compatible)",
                     "在 /v1 提供这个运行（兼容 OpenAI 接口）"),
    "serve.toggle.info": ("Other tools can then use it through the openai client, at this "
                          "page's address and behind its login.",
                          "其他工具即可通过 openai 客户端使用它，地址与本页面相同，登录也相同。"),
    "serve.code": ("Example client (Python; curl below)", "客户端示例（Python；下方为 curl）"),
    "serve.on": ("Serving {source} at {url} as the model \"{model}\".",
                 "正在 {url} 提供 {source}，模型名为 \"{model}\"。"),
    "serve.key": ("Clients send the page's password as their API key.",
                  "客户端把本页面的密码作为 API key 发送。"),
    "serve.off": ("Not serving: /v1 answers 503 until the box is ticked.",
                  "未提供服务：勾选之前，/v1 会返回 503。"),
    "serve.pick": ("Pick a run first, then tick the box to serve it.",
                   "请先选择一个运行，再勾选以提供服务。"),
    "serve.refused": ("This page can be reached beyond this machine without a login, so it does "
                      "not serve /v1: start it with --auth USER:PASS (clients then send PASS as "
                      "their API key).",
                      "本页面无需登录即可从其他机器访问，因此不提供 /v1：请用 --auth USER:PASS "
                      "启动（客户端把 PASS 作为 API key 发送）。"),
    "serve.unmounted": ("/v1 is served by the page's own server (python -m studio ui, or "
                        "launch.py); or run python -m studio serve --run RUN_FOLDER.",
                        "/v1 由页面自己的服务器提供（python -m studio ui 或 launch.py）；也可以运行 "
                        "python -m studio serve --run 运行文件夹。"),
    "serve.failed": ("Could not serve {source}: {error}", "无法提供 {source}：{error}"),
}


# ---------------------------------------------------------------------------- the two columns
def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower())


def _field_texts() -> dict[str, tuple[str, str]]:
    """Label and info line of every config field in both languages, for the form: the help, its
    bounds, and that 0 leaves it to the studio where it does."""
    out = {}
    for f in fields(FineTuningConfig):
        meta = f.metadata
        en, zh = [field_texts.field_help(f.name, "en")], [field_texts.field_help(f.name, "zh")]
        if meta.get("min") is not None and meta.get("max") is not None:
            en.append(CATALOG["field.range"][0].format(**meta))
            zh.append(CATALOG["field.range"][1].format(**meta))
        if zero_means_automatic(f.name):
            en.append(CATALOG["field.auto_number"][0])
            zh.append(CATALOG["field.auto_number"][1])
        out[f"field.{f.name}.label"] = (field_texts.field_label(f.name, "en"),
                                        field_texts.field_label(f.name, "zh"))
        out[f"field.{f.name}.info"] = (" ".join(en), "".join(zh))
    return out


@functools.cache
def texts() -> dict[str, tuple[str, str]]:
    """Every text of the page: the catalog, the config fields, their groups and the presets."""
    return {**CATALOG, **_field_texts(),
            **{f"group.{_slug(g)}": (g, field_texts.GROUPS_ZH[g]) for g in GROUPS},
            **{f"preset.{name}": (name, preset_label(name).in_language("zh"))
               for name in [AUTO, *PRESETS]}}


def translations() -> gr.I18n:
    """The page's texts for Gradio (launch(i18n=...)), which shows them in the page's language."""
    return gr.I18n(**{lang: {key: pair[i] for key, pair in texts().items()}
                      for i, lang in enumerate(LANGUAGES)})


# The language buttons in the header: (label, locale). Gradio's own texts are kept under zh-CN,
# ours under zh, which zh-CN falls back to.
SWITCH = (("English", "en"), ("中文", "zh-CN"))


def _locale_module() -> str:
    """The file of Gradio's page code that exports changeLocale (its name carries a build hash),
    or "" where this Gradio has none: the switch then only sets the server's language."""
    import pathlib

    assets = pathlib.Path(gr.__file__).parent / "templates" / "frontend" / "assets"
    for path in sorted(assets.glob("core-*.js")):
        if "changeLocale" in path.read_text(encoding="utf-8", errors="ignore"):
            return path.name
    return ""


def script() -> str:
    """launch(head=...): the page's language is the one picked in the header (kept in this
    browser's storage) or else the browser's; a cookie tells the server, so its messages are
    written in it. Picking one reloads the page, which draws every box again in it (the form,
    the dataset and a live run come back as after any reload)."""
    return f"""<script>(() => {{
  const KEY = "{COOKIE}", MODULE = "./assets/{_locale_module()}";
  const chosen = () => localStorage.getItem(KEY);
  const keep = () => {{ document.cookie = KEY + "=" + (chosen() || document.documentElement.lang) +
                                          "; path=/; max-age=31536000; SameSite=Lax"; }};
  const apply = async () => {{
    const want = chosen();
    if (want && MODULE.endsWith(".js") && document.documentElement.lang !== want)
      (await import(MODULE)).changeLocale(want);
  }};
  keep();
  apply();      // Gradio adds this script once its page is set up, its language set already
  new MutationObserver(() => {{ keep(); apply(); }}).observe(
      document.documentElement, {{attributes: true, attributeFilter: ["lang"]}});
  window.studioLanguage = lang => {{ localStorage.setItem(KEY, lang); keep(); location.reload(); }};
}})();</script>"""


def T(key: str) -> I18nData:
    """A static text of the page, translated in the browser."""
    assert key in texts(), f"not in the catalog: {key}"
    return I18nData(key)


def field_label(name: str):
    return T(f"field.{name}.label")


def field_info(name: str):
    return T(f"field.{name}.info")


def group_title(group: str):
    return T(f"group.{_slug(group)}")


# ---------------------------------------------------------------------------- the server's side
def language(accept: str | None = None) -> str:
    """'zh' or 'en': the page's language for the request being answered (its cookie, else the
    browser's Accept-Language); English outside a request (the API, the tests, the CLI)."""
    if accept is None:
        from gradio.context import LocalContext   # the request Gradio is answering

        request = LocalContext.request.get(None)
        if request is None:
            return "en"
        try:
            accept = request.cookies.get(COOKIE) or request.headers.get("accept-language") or ""
        except Exception:   # noqa: BLE001 - a request without headers: the default
            return "en"
    ranked = []
    for i, part in enumerate(accept.split(",")):
        tag, _, q = part.strip().partition(";q=")
        try:
            ranked.append((-float(q or 1), i, tag.strip().lower()))
        except ValueError:
            continue
    first = min(ranked)[2] if ranked else ""
    return "zh" if first == "zh" or first.startswith("zh-") else "en"


def say(key: str, lang: str | None = None, **values) -> str:
    """The catalog's text for `key` in the request's language, with `values` put in."""
    text = texts()[key][LANGUAGES.index(lang or language())]
    return text.format(**values) if values else text


def engine(message) -> str:
    """An engine message (a studio.texts Text) in the request's language; any other text as
    it is."""
    return str(localise(message, language()))


def recorded(message) -> str:
    """A message read back from a run's files (kept in English there), in the request's
    language where the catalog wrote it."""
    return engine(read_back(message))


def error_text(e: BaseException) -> str:
    """An error's message in the request's language, where the engine wrote it as a Text (a
    refusal's problems, one a line); else its own words."""
    problems = getattr(e, "problems", None)
    if problems is not None:
        return "\n".join(engine(p) for p in problems)
    return engine(message_of(e))


def state_word(state: str | None) -> str:
    """A run's state (running, finished, ...) in the request's language."""
    key = f"state.{state}"
    return say(key) if key in texts() else str(state)


def field_help(name: str) -> str:
    """A config field's help in the request's language (for an info line the server rewrites)."""
    return field_texts.field_help(name, language())


def preset_name(name: str) -> str:
    """A preset's name (Auto's too) in the request's language."""
    return engine(preset_label(name))


def preset_purpose(name: str) -> str:
    """What a preset is for, in the request's language."""
    return engine(PRESETS[name].why)
