import time, sys, json
def main():
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    import pathlib
    path = str(pathlib.Path(__file__).resolve().parents[3] / "pytest_llmperf/cards/tiny-llama-2l")
    t0=time.perf_counter()
    llm = LLM(model=path, load_format="dummy", skip_tokenizer_init=True, enforce_eager=True,
              max_model_len=512, max_num_seqs=16, seed=0, kv_cache_memory_bytes=256<<20)
    ts=time.perf_counter()-t0
    sp = SamplingParams(max_tokens=64, ignore_eos=True, detokenize=False, temperature=0)
    prompts=[TokensPrompt(prompt_token_ids=[(7*i+j)%1000+10 for j in range(64)]) for i in range(16)]
    llm.generate(prompts[:2], sp, use_tqdm=False)
    rates=[]; steals=[]
    def st():
        v=open('/proc/stat').readline().split()[1:]; return [int(x) for x in v]
    for r in range(8):
        a=st(); t=time.perf_counter(); llm.generate(prompts, sp, use_tqdm=False); dt=time.perf_counter()-t; b=st()
        d=[y-x for x,y in zip(a,b)]; steals.append([round(x/dt,1) for x in d[:8]])
        rates.append(16*64/dt)
    print(json.dumps({"start":ts,"rates":[round(r) for r in rates],"jps":steals}), flush=True)
if __name__=="__main__": main()
