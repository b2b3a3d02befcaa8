"""A runaway agent, stopped by its run budget: it ends with an answer, and prints its bill.

The fake model calls its search tool on every turn and would never stop on
its own (offline: no API key, no network). ``BudgetMiddleware`` gives each run
$0.01 (``run:{run_id}``) and charges the search tool $0.001 a call. The first
run is ended by the budget with a final message; the second is asked to
conclude (no tools) once it has used 60% of its budget, and answers.
"""

from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from budgetguard import BudgetGuard, CallRecord, Limit
from budgetguard.agents import BudgetMiddleware
from budgetguard.testing import FakeChatModel


class RunawayModel(FakeChatModel):
    """Calls the first tool it is given, every turn, forever."""

    def _reply(self, messages: Any, **kwargs: Any) -> Any:
        msg, usage = super()._reply(messages, **kwargs)
        if kwargs.get("tools"):
            name = kwargs["tools"][0]["function"]["name"]
            call_id = f"call_{len(messages)}"
            call = {"name": name, "args": {"query": "more"}, "id": call_id, "type": "tool_call"}
            msg = AIMessage(content="", tool_calls=[call], response_metadata=msg.response_metadata)
        return msg, usage


@tool
def web_search(query: str) -> str:
    """Search the web."""
    return "Ten more pages of results. " * 40


records: list[CallRecord] = []
guard = BudgetGuard(limits=[Limit(usd="0.01", scope="run:{run_id}")], on_record=records.append)
model = RunawayModel(model_name="gpt-4o-mini", max_tokens=300, responses=["Best answer from what I found."])
costs = {"web_search": "0.001"}

for title, middleware in (
    ("ended by the budget", BudgetMiddleware(guard, tool_costs=costs)),
    ("wrapped up at 60%", BudgetMiddleware(guard, tool_costs=costs, wrap_up_at=0.6)),
):
    agent = create_agent(model, [web_search], middleware=[middleware])
    state = agent.invoke({"messages": [HumanMessage("Find everything about budgets.")]})
    bill = state["budget"]
    print(f"== {title}: run {bill['run_id']}")
    print("final answer:", state["messages"][-1].text)
    print(f"  model calls: {bill['calls']}, tool calls: {bill['tool_calls']}, spent: ${bill['spent_usd']}")
    print(f"  wrapped up: {bill['wrapped_up']}, ended by the budget: {bill['ended_by_budget']}")
    for row in guard.remaining(run_id=bill["run_id"]).rows:
        print(f"  {row.scope}: spent ${row.spent} of ${row.cap}, ${row.remaining} left")
    mine = [r for r in records if r.metadata["run_id"] == bill["run_id"] and r.outcome != "refused"]
    print(f"  records: {len(mine)}, summing to ${sum(r.cost_usd for r in mine)}")
